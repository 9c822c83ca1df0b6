"""Fresh request ids: 128 random bits each, never repeated, not shared with a forked child."""

from __future__ import annotations

import os
import re

from registry.answers import fresh_request_id, request_id_from

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_fresh_ids_are_32_hex_digits_and_never_repeat():
    ids = [fresh_request_id() for _ in range(5_000)]  # many blocks of 256
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_sane_incoming_id_is_kept_and_an_insane_one_replaced():
    assert request_id_from("client-chosen-1") == "client-chosen-1"
    assert HEX32.fullmatch(request_id_from("tab\there"))
    assert HEX32.fullmatch(request_id_from(""))


def test_a_forked_child_draws_its_own_ids():
    fresh_request_id()  # the parent holds a block of drawn ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it would hand out next
        os.write(write, "".join(fresh_request_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(re.findall(".{32}", pipe.read()))
    parent = {fresh_request_id() for _ in range(300)}
    assert len(child) == 10
    assert not child & parent
