"""Reading a log in blocks of whole lines, scanned here or on worker processes, merged in line order.

On one process, the log (a .gz decompressed, or stdin) is read in blocks of
whole lines, each numbered by the lines the scan of the block before found.
On workers (forked: they inherit the compiled rules), a file is read by each
worker, whole: worker k of n scans blocks k, k + n, k + 2n... and counts the
newlines of the others to number its own, so no line travels between
processes (shipping the blocks through pipes cost more CPU than the scan
they spared: docs/benchmarks.md). Every worker reading the same stream cuts
the same blocks. Stdin, which only one process can read, is read by the
parent, which numbers the blocks and ships them to the workers. The
results are merged in block order. A block's result holds only what the
report needs (counts, matching events with their documents, the stages
that settled requests without a match), so the report is the same for any
number of workers: tests/test_replay_parallel.py checks it.

Forked workers share the parent's compiled rules without pickling them
(compiled queries are closures); where fork is not available, replay runs
in one process.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import IO, Any, Callable, Iterator, TextIO, TypeVar

import click

from gatewatch.offline.lines import open_log

# A block of lines is read, split and scanned while it is still in the CPU's cache (4 MiB blocks cost 20% more).
BLOCK_BYTES = 256 << 10
# Files at least this large are split across workers when their number is not given.
PARALLEL_MIN_BYTES = 32 << 20
# Files larger than this get a progress bar (when asked for).
PROGRESS_MIN_BYTES = 1 << 20

R = TypeVar("R")
# A scan: (number of the block's first line, a block of whole lines) -> its result.
Scan = Callable[[int, bytes], R]
# The worker's scan and result encoder, inherited through fork.
_WORKER: tuple[Callable[[int, bytes], Any], Callable[[Any], Any]] | None = None
# A worker's share of a file: the scan, its line count, the result encoder, and where the first worker has
# read to (the parent's progress bar), inherited through fork.
_SHARE: tuple[Callable[[int, bytes], Any], Callable[[Any], int], Callable[[Any], Any], Any] | None = None
# How often the parent looks at the first worker's progress, in seconds.
_PROGRESS_SECONDS = 0.25


def default_workers(source: str, size: int | None) -> int:
    """Both cores (all of them) for a file large enough to gain from it, else one process."""
    if size is None or size < PARALLEL_MIN_BYTES or not _can_fork():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def whole_lines(stream: IO[bytes], *, block_bytes: int | None = None) -> Iterator[bytes]:
    """The stream in blocks of whole lines (cut after a newline)."""
    block_bytes = block_bytes or BLOCK_BYTES
    while block := stream.read(block_bytes):
        if block[-1:] != b"\n":
            # The rest of the block's last line, however long (a line longer than a block included).
            # One copy of the block, where cutting it at its last newline and carrying the rest made three.
            block += stream.readline()
        yield block


def blocks(stream: IO[bytes], *, block_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, whole lines): for blocks scanned elsewhere (a worker numbers its lines)."""
    line_no = 1
    for block in whole_lines(stream, block_bytes=block_bytes):
        yield line_no, block
        line_no += block.count(b"\n")


def split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block ends with a newline
    return lines


def scan_log(
    scan: Scan[R],
    source: str,
    *,
    lines_in: Callable[[R], int],
    workers: int | None,
    progress: bool,
    err: TextIO,
    to_parent: Callable[[R], Any] = lambda result: result,
    from_worker: Callable[[Any], R] = lambda result: result,
) -> Iterator[R]:
    """``scan``'s result for each block of the log, in line order; ``lines_in``: how many lines a result
    scanned (on one process the scan counts them, so the next block is numbered without a count of its own).
    On workers, a result travels as ``to_parent`` makes it (pickled) and is read back with ``from_worker``."""
    with open_log(source) as (stream, raw, size):
        count = default_workers(source, size) if workers is None else max(1, workers)
        if count > 1 and not _can_fork():
            count = 1
        bar = None
        try:
            if progress and size is not None and size >= PROGRESS_MIN_BYTES:
                bar = click.progressbar(length=size, label=f"replaying {source}", file=err)
                bar.__enter__()
            if count == 1:
                yield from _scan_here(scan, lines_in, stream, raw, bar)
            elif source == "-":
                yield from _scan_on_workers(scan, to_parent, from_worker, stream, raw, bar, count)
            else:
                yield from _scan_shares(scan, lines_in, to_parent, from_worker, source, bar, count)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)


def _progress(bar: Any, raw: IO[bytes], done: int) -> int:
    if bar is None:
        return done
    now = raw.tell()
    bar.update(now - done)
    return now


def _scan_here(scan: Scan[R], lines_in: Callable[[R], int], stream: IO[bytes], raw: IO[bytes],
               bar: Any) -> Iterator[R]:
    done = 0
    line_no = 1
    for block in whole_lines(stream):
        result = scan(line_no, block)
        line_no += lines_in(result)  # numbered by the scan, not by counting newlines first (a second pass)
        yield result
        done = _progress(bar, raw, done)


def _scan_on_workers(
    scan: Scan[R],
    to_parent: Callable[[R], Any],
    from_worker: Callable[[Any], R],
    stream: IO[bytes],
    raw: IO[bytes],
    bar: Any,
    count: int,
) -> Iterator[R]:
    global _WORKER
    _WORKER = (scan, to_parent)
    context = multiprocessing.get_context("fork")
    pending: deque[Future[Any]] = deque()
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            for first, block in blocks(stream):
                pending.append(pool.submit(_scan_block, first, block))
                done = _progress(bar, raw, done)
                while len(pending) >= 2 * count:  # bounded: blocks in flight, not the whole log
                    yield from_worker(pending.popleft().result())
            while pending:
                yield from_worker(pending.popleft().result())
    finally:
        _WORKER = None


def _scan_block(first_line_no: int, block: bytes) -> Any:
    assert _WORKER is not None
    scan, to_parent = _WORKER
    return to_parent(scan(first_line_no, block))


def _scan_shares(
    scan: Scan[R],
    lines_in: Callable[[R], int],
    to_parent: Callable[[R], Any],
    from_worker: Callable[[Any], R],
    source: str,
    bar: Any,
    count: int,
) -> Iterator[R]:
    """The file ``source`` scanned by ``count`` workers, each reading it whole and scanning its share of the
    blocks; their results in block order."""
    global _SHARE
    context = multiprocessing.get_context("fork")
    read_to = context.Value("q", 0, lock=False)  # the first worker's position in the file
    _SHARE = (scan, lines_in, to_parent, read_to)
    try:
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            futures = [pool.submit(_scan_share, source, share, count) for share in range(count)]
            if bar is not None:
                shown = 0
                while wait(futures, timeout=_PROGRESS_SECONDS).not_done:
                    bar.update(read_to.value - shown)
                    shown = read_to.value
                bar.update(bar.length - shown)
            shares = [future.result() for future in futures]
    finally:
        _SHARE = None
    for index in range(sum(map(len, shares))):
        yield from_worker(shares[index % count][index // count])


def _scan_share(source: str, share: int, count: int) -> list[Any]:
    """Worker ``share`` of ``count``: the results of blocks share, share + count, ... of ``source``."""
    assert _SHARE is not None
    scan, lines_in, to_parent, read_to = _SHARE
    results = []
    line_no = 1
    with open_log(source) as (stream, raw, _size):
        for index, block in enumerate(whole_lines(stream)):
            if index % count == share:
                result = scan(line_no, block)
                line_no += lines_in(result)
                results.append(to_parent(result))
            else:  # another worker's block: only its lines counted (a last line without a newline is one)
                line_no += block.count(b"\n") + (block[-1:] != b"\n")
            if share == 0:
                read_to.value = raw.tell()
    return results
