/* modelreg API reference: renders the app's own OpenAPI 3.1 document (openapi.json).
 * Self-contained: no framework, nothing loaded from elsewhere; every node is built with
 * createElement/textContent (never innerHTML), so text from the document cannot inject markup.
 */
"use strict";

(function () {
  const METHODS = ["get", "put", "post", "patch", "delete", "options", "head", "trace"];
  const MAX_DEPTH = 4;
  let spec = null;

  // ---- small DOM helpers ----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  /* Text with `code` spans, the only markup the document's descriptions use. */
  function prose(text, tag) {
    const node = el(tag || "p", { class: "prose" });
    String(text || "").split("`").forEach((part, index) => {
      if (!part) return;
      node.appendChild(index % 2 ? el("code", { text: part }) : document.createTextNode(part));
    });
    return node;
  }

  function slug(text) {
    return String(text).replace(/[^A-Za-z0-9_-]+/g, "-");
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  // ---- references -----------------------------------------------------------------------

  function refName(ref) {
    return ref.split("/").pop();
  }

  function resolve(node) {
    let current = node;
    const seen = new Set();
    while (current && typeof current === "object" && typeof current.$ref === "string") {
      if (seen.has(current.$ref) || !current.$ref.startsWith("#/")) break;
      seen.add(current.$ref);
      let target = spec;
      for (const part of current.$ref.slice(2).split("/")) {
        target = target ? target[part.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined;
      }
      if (target === undefined) break;
      current = target;
    }
    return current;
  }

  function schemaLink(ref) {
    const name = refName(ref);
    return el("a", { href: "#schema-" + slug(name), class: "ref", text: name });
  }

  // ---- schemas --------------------------------------------------------------------------

  function typeLabel(schema) {
    if (!schema || typeof schema !== "object") return el("span", { class: "type", text: "any" });
    if (schema.$ref) return schemaLink(schema.$ref);
    const box = el("span", { class: "type" });
    const alternatives = schema.oneOf || schema.anyOf;
    if (alternatives) {
      alternatives.forEach((alt, index) => {
        if (index) box.appendChild(document.createTextNode(" | "));
        box.appendChild(typeLabel(alt));
      });
      return box;
    }
    let types = schema.type;
    if (types === undefined) {
      if (schema.const !== undefined) return el("span", { class: "type", text: pretty(schema.const) });
      if (schema.properties) types = "object";
      else return el("span", { class: "type", text: "any" });
    }
    (Array.isArray(types) ? types : [types]).forEach((type, index) => {
      if (index) box.appendChild(document.createTextNode(" | "));
      if (type === "array") {
        box.appendChild(document.createTextNode("array of "));
        box.appendChild(schema.items ? typeLabel(schema.items) : el("span", { text: "any" }));
      } else if (type === "object" && schema.additionalProperties &&
                 typeof schema.additionalProperties === "object" && !schema.properties) {
        box.appendChild(document.createTextNode("map of "));
        box.appendChild(typeLabel(schema.additionalProperties));
      } else {
        box.appendChild(document.createTextNode(type + (schema.format ? " (" + schema.format + ")" : "")));
      }
    });
    return box;
  }

  function constraints(schema) {
    if (!schema || typeof schema !== "object" || schema.$ref) return [];
    const out = [];
    const add = (label, value) => out.push(el("span", { class: "constraint" },
      el("span", { class: "key", text: label }), " ", el("code", { text: value })));
    if (schema.enum) add("one of", schema.enum.map((v) => JSON.stringify(v)).join(", "));
    if (schema.const !== undefined) add("always", JSON.stringify(schema.const));
    if (schema.pattern) add("pattern", schema.pattern);
    for (const key of ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength",
                       "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"]) {
      if (schema[key] !== undefined) add(key, String(schema[key]));
    }
    if (schema.default !== undefined) add("default", JSON.stringify(schema.default));
    if (schema.contentMediaType) add("content", schema.contentMediaType);
    if (schema.example !== undefined) {
      add("example", typeof schema.example === "string" ? schema.example : JSON.stringify(schema.example));
    }
    if (schema.additionalProperties === false) out.push(el("span", { class: "constraint", text: "no other fields" }));
    if (schema.writeOnly) out.push(el("span", { class: "constraint", text: "write-only" }));
    return out;
  }

  /* The nested detail worth showing under a field: an object's fields, an array's item
   * fields, alternatives, or an embedded JSON document (contentSchema). */
  function nested(schema, depth, seen) {
    if (!schema || typeof schema !== "object" || depth > MAX_DEPTH) return null;
    if (schema.$ref) return null; // linked, rendered in the Schemas section
    if (schema.oneOf || schema.anyOf) {
      const alternatives = (schema.oneOf || schema.anyOf).filter((alt) => alt && alt.type !== "null");
      const detailed = alternatives.map((alt) => schemaBlock(alt, depth + 1, seen)).filter(Boolean);
      if (!detailed.length) return null;
      return el("div", { class: "alternatives" },
        el("div", { class: "label", text: schema.oneOf ? "exactly one of:" : "any of:" }),
        el("ol", {}, detailed.map((block) => el("li", {}, block))));
    }
    if (schema.contentSchema) {
      return el("div", { class: "embedded" }, el("span", { class: "label", text: "JSON content: " }),
        typeLabel(schema.contentSchema));
    }
    if (schema.properties) return propertiesTable(schema, depth + 1, seen);
    if (schema.items && !schema.items.$ref) return nested(schema.items, depth, seen);
    return null;
  }

  function propertiesTable(schema, depth, seen) {
    const required = new Set(schema.required || []);
    const body = el("tbody");
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const detail = nested(prop, depth, seen);
      body.appendChild(el("tr", {},
        el("td", { class: "name" }, el("code", { text: name }),
          required.has(name) ? el("span", { class: "required", title: "required", text: "*" }) : null),
        el("td", {}, typeLabel(prop), el("div", { class: "constraints" }, constraints(prop))),
        el("td", {}, prop && prop.description ? prose(prop.description) : null, detail)));
    }
    return el("table", { class: "fields" },
      el("thead", {}, el("tr", {}, el("th", { text: "Field" }), el("th", { text: "Type" }),
        el("th", { text: "Description" }))),
      body);
  }

  /* A full rendering of one schema (following a top-level $ref once). */
  function schemaBlock(schema, depth, seen) {
    depth = depth || 0;
    seen = seen || new Set();
    if (!schema || typeof schema !== "object") return null;
    const box = el("div", { class: "schema" });
    let target = schema;
    if (schema.$ref) {
      box.appendChild(el("div", { class: "schema-name" }, schemaLink(schema.$ref)));
      if (seen.has(schema.$ref)) return box;
      seen = new Set(seen).add(schema.$ref);
      target = resolve(schema);
    } else {
      box.appendChild(el("div", { class: "schema-name" }, typeLabel(schema)));
    }
    if (target.description) box.appendChild(prose(target.description));
    const limits = constraints(target);
    if (limits.length) box.appendChild(el("div", { class: "constraints" }, limits));
    const detail = target.properties ? propertiesTable(target, depth, seen) : nested(target, depth, seen);
    if (detail) box.appendChild(detail);
    return box;
  }

  // ---- operations -----------------------------------------------------------------------

  function operations() {
    const list = [];
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        if (item[method]) list.push({ path, method, op: item[method], shared: item.parameters || [] });
      }
    }
    return list;
  }

  function examplesOf(media) {
    const out = [];
    if (media.example !== undefined) out.push(["example", media.example]);
    for (const [name, example] of Object.entries(media.examples || {})) {
      const resolved = resolve(example);
      out.push([resolved.summary || name, resolved.value]);
    }
    return out;
  }

  function contentBlock(content) {
    const box = el("div", { class: "content" });
    for (const [type, media] of Object.entries(content || {})) {
      const block = el("div", { class: "media" }, el("div", { class: "media-type" }, el("code", { text: type })));
      if (media.schema) block.appendChild(schemaBlock(media.schema));
      if (media.encoding) {
        const parts = Object.entries(media.encoding).map(([part, enc]) =>
          el("li", {}, el("code", { text: part }), " sent as ", el("code", { text: enc.contentType || "default" })));
        block.appendChild(el("div", { class: "encoding" }, el("span", { class: "label", text: "Parts:" }), el("ul", {}, parts)));
      }
      for (const [label, value] of examplesOf(media)) {
        block.appendChild(el("details", { class: "example" }, el("summary", { text: "Example: " + label }),
          el("pre", {}, el("code", { text: typeof value === "string" ? value : pretty(value) }))));
      }
      box.appendChild(block);
    }
    return box;
  }

  function parametersBlock(parameters) {
    const body = el("tbody");
    for (const raw of parameters) {
      const p = resolve(raw);
      body.appendChild(el("tr", {},
        el("td", { class: "name" }, el("code", { text: p.name }),
          p.required ? el("span", { class: "required", title: "required", text: "*" }) : null),
        el("td", { text: p.in + (p.explode && p.schema && p.schema.type === "array" ? " (repeatable)" : "") }),
        el("td", {}, typeLabel(p.schema), el("div", { class: "constraints" }, constraints(p.schema))),
        el("td", {}, p.description ? prose(p.description) : null,
          p.example !== undefined ? el("div", { class: "constraint" }, el("span", { class: "key", text: "example" }), " ",
            el("code", { text: String(p.example) })) : null)));
    }
    return el("table", { class: "params" },
      el("thead", {}, el("tr", {}, ["Name", "In", "Type", "Description"].map((t) => el("th", { text: t })))),
      body);
  }

  function responsesBlock(responses) {
    const list = el("div", { class: "responses" });
    for (const [status, raw] of Object.entries(responses || {})) {
      const response = resolve(raw);
      const kind = status[0] === "2" ? "ok" : status[0] === "3" ? "redirect" : "error";
      const block = el("details", { class: "response " + kind, open: kind === "ok" },
        el("summary", {}, el("span", { class: "status-code", text: status }), " ", prose(response.description, "span")));
      if (response.headers) {
        const headers = Object.entries(response.headers).map(([name, header]) =>
          el("li", {}, el("code", { text: name }), header.description ? prose(" " + header.description, "span") : null));
        block.appendChild(el("div", { class: "headers" }, el("span", { class: "label", text: "Headers:" }), el("ul", {}, headers)));
      }
      if (response.content) block.appendChild(contentBlock(response.content));
      list.appendChild(block);
    }
    return list;
  }

  function operationBlock(entry) {
    const { path, method, op, shared } = entry;
    const id = "op-" + slug(op.operationId || method + path);
    const secured = Array.isArray(op.security) ? op.security.length > 0 : Array.isArray(spec.security) && spec.security.length > 0;
    const access = secured
      ? el("span", { class: "badge lock", text: "token: " + (op["x-required-role"] || "required") })
      : el("span", { class: "badge public", text: "public" });
    const details = el("details", { class: "op", id },
      el("summary", {},
        el("span", { class: "method " + method, text: method.toUpperCase() }),
        el("code", { class: "path", text: path }),
        el("span", { class: "summary", text: op.summary || "" }),
        access));
    details.dataset.search = [method, path, op.summary, op.operationId, (op.tags || []).join(" ")]
      .join(" ").toLowerCase();
    const body = el("div", { class: "op-body" });
    if (op.description) body.appendChild(prose(op.description));
    body.appendChild(el("p", { class: "meta" }, "operationId ", el("code", { text: op.operationId || "-" })));
    const parameters = [...shared, ...(op.parameters || [])];
    if (parameters.length) body.append(el("h4", { text: "Parameters" }), parametersBlock(parameters));
    if (op.requestBody) {
      const request = resolve(op.requestBody);
      body.append(el("h4", { text: "Request body" + (request.required ? "" : " (optional)") }));
      if (request.description) body.appendChild(prose(request.description));
      body.appendChild(contentBlock(request.content));
    }
    body.append(el("h4", { text: "Responses" }), responsesBlock(op.responses));
    details.appendChild(body);
    return details;
  }

  // ---- page -----------------------------------------------------------------------------

  function render() {
    const info = spec.info || {};
    document.title = (info.title || "API") + " API reference";
    document.getElementById("api-title").textContent = (info.title || "API") + " API reference";
    document.getElementById("api-version").textContent =
      "version " + (info.version || "?") + " \u00b7 OpenAPI " + (spec.openapi || "?");

    const content = document.getElementById("content");
    const toc = document.getElementById("toc");
    content.replaceChildren();
    toc.replaceChildren();

    const intro = el("section", { class: "intro" });
    if (info.description) intro.appendChild(prose(info.description));
    const schemes = (spec.components && spec.components.securitySchemes) || {};
    for (const [name, scheme] of Object.entries(schemes)) {
      intro.appendChild(el("p", { class: "auth" }, el("strong", { text: "Authentication: " }),
        el("code", { text: name }), " \u2014 " + scheme.type + (scheme.scheme ? " " + scheme.scheme : ""),
        scheme.description ? prose(" " + scheme.description, "span") : null));
    }
    content.appendChild(intro);

    const byTag = new Map();
    for (const tag of spec.tags || []) byTag.set(tag.name, { tag, ops: [] });
    for (const entry of operations()) {
      const name = (entry.op.tags && entry.op.tags[0]) || "other";
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, ops: [] });
      byTag.get(name).ops.push(entry);
    }
    const tocList = el("ul", {});
    for (const { tag, ops } of byTag.values()) {
      if (!ops.length) continue;
      const section = el("section", { class: "tag", id: "tag-" + slug(tag.name) },
        el("h2", { text: tag.name }), tag.description ? prose(tag.description) : null);
      const links = el("ul", {});
      for (const entry of ops) {
        const block = operationBlock(entry);
        section.appendChild(block);
        const link = el("a", { href: "#" + block.id },
          el("span", { class: "method " + entry.method, text: entry.method.toUpperCase() }), " " + entry.path);
        link.dataset.target = block.id;
        links.appendChild(el("li", {}, link));
      }
      content.appendChild(section);
      tocList.appendChild(el("li", {}, el("a", { href: "#" + section.id, class: "toc-tag", text: tag.name }), links));
    }

    const components = (spec.components && spec.components.schemas) || {};
    const schemas = el("section", { class: "tag", id: "schemas" }, el("h2", { text: "Schemas" }));
    for (const name of Object.keys(components).sort()) {
      schemas.appendChild(el("div", { class: "component", id: "schema-" + slug(name) },
        el("h3", { text: name }), schemaBlock({ $ref: "#/components/schemas/" + name })));
    }
    content.appendChild(schemas);
    tocList.appendChild(el("li", {}, el("a", { href: "#schemas", class: "toc-tag", text: "Schemas" })));
    toc.appendChild(tocList);
    openTarget();
  }

  function openTarget() {
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  function applyFilter(text) {
    const query = text.trim().toLowerCase();
    for (const op of document.querySelectorAll("details.op")) {
      op.hidden = Boolean(query) && !op.dataset.search.includes(query);
    }
    for (const section of document.querySelectorAll("section.tag")) {
      if (section.id === "schemas") continue;
      section.hidden = !section.querySelector("details.op:not([hidden])");
    }
    for (const link of document.querySelectorAll("#toc a[data-target]")) {
      const target = document.getElementById(link.dataset.target);
      link.parentElement.hidden = Boolean(target && target.hidden);
    }
  }

  function fail(message) {
    const status = document.getElementById("status");
    if (status) {
      status.textContent = message;
      status.classList.add("error");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const source = document.body.dataset.spec || "openapi.json";
    fetch(source, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((response) => {
        if (!response.ok) throw new Error(source + " answered " + response.status);
        return response.json();
      })
      .then((document_) => {
        spec = document_;
        render();
      })
      .catch((error) => fail("Could not load the API description: " + error.message));
    document.getElementById("filter").addEventListener("input", (event) => applyFilter(event.target.value));
    window.addEventListener("hashchange", openTarget);
  });
})();
