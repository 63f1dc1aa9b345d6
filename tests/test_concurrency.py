"""Several processes append to the same subjects: each event is stored once or refused."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from typing import Any

import pytest

from protocolkit.errors import ConcurrencyError
from protocolkit.events import Event
from protocolkit.store import open_store

SUBJECTS = ("A", "B", "C")
WORKERS = 4
ROUNDS = 15


def _worker(url: str, worker: int, queue: Any) -> None:
    try:
        queue.put(_append_rounds(url, worker))
    except BaseException as exc:
        queue.put(exc)
        raise


def _append_rounds(url: str, worker: int) -> tuple[list[str], list[str]]:
    from tests.helpers import dose

    stored: list[str] = []
    refused: list[str] = []
    with open_store(url) as store:
        for round_ in range(ROUNDS):
            subject = SUBJECTS[(worker + round_) % len(SUBJECTS)]
            seen = store.version("STUDY", subject)
            batch: list[Event] = [dose(subject), dose(subject)]
            try:
                store.append(batch, expected_versions={("STUDY", subject): seen})
            except ConcurrencyError:
                refused.extend(str(e.event_id) for e in batch)
            else:
                stored.extend(str(e.event_id) for e in batch)
    return stored, refused


@pytest.mark.slow
def test_processes_appending_to_the_same_subjects(store_url: str) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(store_url, w, queue)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    stored = [i for s, _ in results for i in s]
    refused = [i for _, r in results for i in r]
    assert len(stored) + len(refused) == WORKERS * ROUNDS * 2
    assert stored, "no append succeeded"

    with open_store(store_url) as store:
        in_log = [str(r.event.event_id) for r in store.events()]
        # Every event reported stored is stored exactly once; no refused one slipped in.
        assert Counter(in_log) == Counter(stored)
        assert not set(refused) & set(in_log)
        for subject in SUBJECTS:
            versions = [r.version for r in store.history("STUDY", subject)]
            assert versions == list(range(1, len(versions) + 1))
            # Batches are atomic: each subject holds whole pairs.
            assert len(versions) % 2 == 0
