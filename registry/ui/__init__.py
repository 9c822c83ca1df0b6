"""The web UI: server-rendered pages under /ui/ (`registry.ui.views.bp`) that read and act
through the registry's services, signed in with a token exchanged for a server-side session
(docs/ui.md); `registry.ui.root.root_bp` sends a browser at `/` there."""
