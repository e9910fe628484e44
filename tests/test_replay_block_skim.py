"""Replay skims a block of lines in one msgspec call; that must never change which line says what.

msgspec's ``decode_lines`` reads values separated by any whitespace, not
lines: a line holding two objects and an object broken over two lines
balance out. ``skim_block`` takes a block only when it is plainly one object
a line, and each line keeps its number, its skim and its malformed-line report.
"""
from __future__ import annotations

import json
from pathlib import Path

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gatewatch.offline import parallel
from gatewatch.offline.lines import skim_block, skim_line
from gatewatch.offline.parallel import split_lines
from test_replay_shortcut import mixed_log, problems, run_replay, without_shortcut

EVENT = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a1", "stage": "ResponseComplete",
         "verb": "get", "objectRef": {"resource": "pods", "namespace": "team-a", "name": "web"},
         "annotations": {"authorization.k8s.io/decision": "allow"}}
PLAIN = json.dumps(EVENT, separators=(",", ":")).encode()

# Lines of every kind a log can hold: plain events, and each way a line can fail to be one object alone.
LINES = [
    PLAIN,
    json.dumps({**EVENT, "verb": "create", "stage": "RequestReceived"}).encode(),  # with spaces after the colons
    json.dumps({**EVENT, "objectRef": {"resource": "leases", "namespace": "kube-node-lease"}}).encode(),
    json.dumps({**EVENT, "user": {"username": "zoë"}}, ensure_ascii=False).encode(),  # UTF-8 text
    b'{"kind":"Event","verb":"get","user":{"username":"\xff"}}',  # not UTF-8
    b"{}",  # no verb: parsed whole
    b'{"verb":1}',  # a verb of the wrong type
    b'{"verb":"get","objectRef":{"resource":["pods"]}}',  # a field the skim does not hold plainly
    b'{"verb":"get"} {"verb":"list"}',  # two objects on one line
    b'{"verb":"get"}{"verb":"list"}',
    b'{"verb":"get",',  # one object over two lines...
    b'"auditID":"x"}',
    b'{"a":',
    b'{"verb":"watch"}}',
    b"",  # a blank line
    b"   ",
    b'{"verb":"get"}\r',  # a CRLF log
    b'  {"verb":"get"}',
    b"[1]",
    b"{not json",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=12), st.booleans())
# As many values as lines, yet not one a line: two on one line, and none on a blank one or one over two lines.
@example([b'{"verb":"get"} {"verb":"list"}', b"", PLAIN], True)
@example([b'{"verb":"get"}{"verb":"list"}', b'{"verb":"get",', b'"auditID":"x"}'], False)
@example([b'{"a":', b'{"verb":"watch"}}', b'{"verb":"get"} {"verb":"list"}'], True)
def test_a_block_skim_is_each_lines_skim_or_none(lines: list[bytes], newline_at_end: bool) -> None:
    block = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    found = skim_block(block)
    split = split_lines(block)
    plain = all(skim_line(line) is not None and line[:1] == b"{" and line[-1:] == b"}" for line in split)
    if found is None:
        assert not plain  # a block of plain lines is always taken whole
        return
    skims, ends = found
    assert len(skims) == len(ends) == len(split)
    starts = [0] + [end + 1 for end in ends[:-1]]
    for start, end, skim, line in zip(starts, ends, skims, split):
        assert block[start:end] == line
        assert skim_line(line) == (None if skim.verb is msgspec.UNSET else skim)


def test_two_objects_on_one_line_and_one_over_two_lines_are_reported_where_they_are(tmp_path: Path) -> None:
    lines = [
        PLAIN.decode(),
        json.dumps({**EVENT, "auditID": "a2"}) + " " + json.dumps({**EVENT, "auditID": "a3"}),
        json.dumps({**EVENT, "auditID": "a4"})[:-1] + ",",
        '"requestURI":"/api/v1/pods"}',
        PLAIN.decode(),
    ]
    block = ("\n".join(lines) + "\n").encode()
    # The trap: read as whitespace-separated values, the block has as many values as lines.
    assert len(msgspec.json.Decoder().decode_lines(block)) == len(lines)
    log = tmp_path / "audit.jsonl"
    log.write_bytes(block)

    alerts, stderr = run_replay(log, [])

    malformed, _ = problems(stderr)
    assert [report.split(": skipped")[0] for report in malformed] == [f"{log}:2", f"{log}:3", f"{log}:4"]
    assert "2 event(s) replayed" in stderr and "3 malformed line(s)" in stderr


def test_replay_reports_the_same_block_by_block_as_line_by_line(tmp_path: Path, monkeypatch) -> None:
    # Small blocks: most are skimmed at once, the few with a broken line go line by line.
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 4096)
    log = mixed_log(tmp_path / "mixed.jsonl")
    monkeypatch.setattr("gatewatch.offline.report.MALFORMED_LISTED", 10_000)
    taken = []
    original = skim_block
    monkeypatch.setattr("gatewatch.offline.replay.skim_block",
                        lambda block: taken.append(found := original(block)) or found)

    by_block = run_replay(log, [])

    assert sum(found is not None for found in taken) > len(taken) / 2
    without_shortcut(monkeypatch)
    line_by_line = run_replay(log, [])
    assert by_block[0] == line_by_line[0]
    assert problems(by_block[1])[0] == problems(line_by_line[1])[0]
    summary = by_block[1].splitlines()[-1]
    assert summary == line_by_line[1].splitlines()[-1]
