"""Run a crash test: workers started here against a broker, simulated traffic with its delayed
labels and some poisoned messages, workers killed -9 at random moments and restarted, then the
verdict (``streams.crashtest.verdict``) over what a downstream reader saw.

Every run uses topics, a stage-1 group and a stage-2 app id of its own (``prefix``), so it can
be pointed at a shared broker without touching the deployment's topics.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from streams.crashtest.tail import Tail
from streams.crashtest.verdict import Verdict, judge
from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka import clients
from streams.kafka.dlq import header_dict
from streams.kafka.topics import create_topics, scoped
from streams.process import WorkerProcess
from streams.settings import Settings

log = logging.getLogger(__name__)

READY = {"stage1": "assigned", "stage2": "stage 2 ready"}
"""What a worker's log says once it holds its partitions."""
CHECKPOINTED = "first checkpoint written"
"""What a stage-1 worker's log says once this start has written a checkpoint."""
POISON = (b"{not json", b'{"transaction_id": "p", "amount": "abc"}', b"", b"[1, 2, 3]")


@dataclass
class Plan:
    """What a crash test does."""

    customers: int = 300
    days: int = 30
    seed: int = 7
    rate: float = 2000.0  # transactions per second offered
    labels: bool = True
    poison: int = 7
    stage1_workers: int = 1
    kills_stage1: int = 2
    kills_stage2: int = 2
    min_gap_s: float = 1.0  # between kills: from a worker's (re)start to its next kill, at least
    max_gap_s: float = 4.0
    settle_timeout_s: float = 180.0
    # every n-th stage-1 kill waits until that start has written a checkpoint, so restores from
    # a checkpoint are exercised whatever the machine's speed (the other kills land anywhere
    # from the assignment on, recovery included); 0: never wait
    checkpoint_kill_every: int = 2
    exactly_once: bool = False
    stage2_exactly_once: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    verdict: Verdict
    kills: list[tuple[float, str]]
    seconds: float
    flagged_records: int
    logs: dict[str, str]
    exited: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.verdict.as_dict(),
            "kills": [name for _, name in self.kills],
            "seconds": round(self.seconds, 1),
            "flagged_records": self.flagged_records,
            "workers_exited": self.exited,
        }


def traffic_frame(plan: Plan) -> pl.DataFrame:
    df = read_handbook_frame(
        simulate(
            customers=plan.customers,
            terminals=plan.customers * 2,
            days=plan.days,
            seed=plan.seed,
            compromised_terminals_per_day=1,
            compromised_cards_per_day=1,
        )
    )
    return df if plan.labels else df.drop("TX_FRAUD")


class CrashTest:
    def __init__(
        self, settings: Settings, plan: Plan, log_dir: Path | None = None, prefix: str = ""
    ):
        tag = prefix or f"crash-{int(time.time())}-{random.randrange(1 << 16):04x}"
        self.settings = scoped(settings, tag).model_copy(
            update={
                "exactly_once": plan.exactly_once,
                "stage2_exactly_once": plan.stage2_exactly_once,
            }
        )
        self.plan = plan
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="fraudstream-crash-"))
        self.rng = random.Random(plan.seed)
        self.kills: list[tuple[float, str]] = []
        self.errors: list[BaseException] = []
        self.exited: list[str] = []  # workers that died by themselves

    def _workers(self) -> list[WorkerProcess]:
        s, env = self.settings, self.plan.extra_env
        workers = [
            WorkerProcess(
                "stage1",
                s,
                self.log_dir,
                name=f"stage1-{i}",
                **({"FRAUD_TRANSACTIONAL_ID": f"{s.stage1_group}-{i}"} if s.exactly_once else {}),
                **env,
            )
            for i in range(self.plan.stage1_workers)
        ]
        return [*workers, WorkerProcess("stage2", s, self.log_dir, name="stage2", **env)]

    def _send(self, df: pl.DataFrame, done: threading.Event) -> None:
        try:
            produce_history(df, self.settings, rate=self.plan.rate)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            done.set()

    def _poison(self, done: threading.Event, span_s: float) -> None:
        """The poisoned messages, spread over the traffic."""
        producer = clients.CheckedProducer(self.settings, 60.0)
        for i in range(self.plan.poison):
            time.sleep(self.rng.uniform(0, span_s / max(self.plan.poison, 1)))
            producer.send(
                self.settings.topic_transactions, POISON[i % len(POISON)], f"poison-{i}".encode()
            )
            producer.poll()
        producer.close(f"of {self.plan.poison} poisoned messages")

    def _kill_schedule(self, workers: list[WorkerProcess]) -> list[WorkerProcess]:
        stage1 = [w for w in workers if w.stage == "stage1"]
        stage2 = [w for w in workers if w.stage == "stage2"]
        victims = [self.rng.choice(stage1) for _ in range(self.plan.kills_stage1)]
        victims += stage2 * self.plan.kills_stage2
        self.rng.shuffle(victims)
        return victims

    def run(self) -> Outcome:
        s, plan = self.settings, self.plan
        create_topics(s)
        df = traffic_frame(plan)
        expected = set(df["TRANSACTION_ID"].cast(pl.Utf8).to_list())
        span_s = len(df) / plan.rate
        workers = self._workers()
        topics = [s.topic_decisions, s.topic_flagged, s.topic_dlq, s.topic_flagged_dlq]
        started = time.monotonic()
        with Tail(s, topics) as tail:
            for w in workers:
                w.start()
            done = threading.Event()
            sender = threading.Thread(target=self._send, args=(df, done), daemon=True)
            poisoner = threading.Thread(target=self._poison, args=(done, span_s), daemon=True)
            sender.start()
            poisoner.start()
            try:
                self._kill_while_sending(workers, done, started)
                sender.join()
                poisoner.join(60)
                if self.errors:
                    raise RuntimeError(f"the traffic was not all delivered: {self.errors[0]}")
                tail.wait_decided(s.topic_decisions, expected, plan.settle_timeout_s)
                time.sleep(2.0)  # late duplicates
            finally:
                logs = self._stop_all(workers)
            verdict = self._verdict(tail, expected)
            flagged = tail.count(s.topic_flagged)
        return Outcome(verdict, self.kills, time.monotonic() - started, flagged, logs, self.exited)

    def _kill_while_sending(
        self, workers: list[WorkerProcess], done: threading.Event, started: float
    ) -> None:
        """Kill -9 and restart the scheduled victims until the sending is over."""
        plan = self.plan
        stage1_kills = 0
        for victim in self._kill_schedule(workers):
            if done.is_set():
                return
            victim.wait_log(READY[victim.stage], timeout_s=120)
            if victim.stage == "stage1":
                stage1_kills += 1
                every = plan.checkpoint_kill_every
                # a worker that restored everything writes no checkpoint until new
                # records come: once the sending is over, there are no more kills
                due = bool(every) and stage1_kills % every == 0
                if due and not victim.wait_log(CHECKPOINTED, timeout_s=120, until=done):
                    return
            time.sleep(self.rng.uniform(plan.min_gap_s, plan.max_gap_s))
            victim.kill()
            self.kills.append((time.monotonic() - started, victim.name))
            log.info("killed %s at %.1fs", victim.name, self.kills[-1][0])
            victim.start()

    def _stop_all(self, workers: list[WorkerProcess]) -> dict[str, str]:
        """Stop the workers still running; note those that had exited; their logs' tails."""
        logs = {}
        for w in workers:
            if w.proc is not None and w.proc.poll() not in (None, 0):
                self.exited.append(f"{w.name} exited with {w.proc.returncode}")
            if w.alive:
                w.stop()
            logs[w.name] = w.log()[-4000:]
        return logs

    def _verdict(self, tail: Tail, expected: set[str]) -> Verdict:
        """What a downstream reader saw, judged; where the lost ones were, if any."""
        s = self.settings
        sources = [
            (
                h.get("dlq.source.topic", ""),
                h.get("dlq.source.partition", ""),
                h.get("dlq.source.offset", ""),
            )
            for t in (s.topic_dlq, s.topic_flagged_dlq)
            for h in (header_dict(r[2]) for r in tail.records(t))
        ]
        verdict = judge(
            expected,
            tail.values(s.topic_decisions),
            tail.ids(s.topic_flagged),
            sources,
            self.plan.poison,
        )
        if verdict.lost:
            lost = expected - tail.ids(s.topic_decisions)
            where = tail.positions(s.topic_flagged, lost)
            spots = sorted(p for ps in where.values() for p in ps)
            verdict.examples = {**(verdict.examples or {}), "lost_on_flagged": spots[:20]}
            if spots:
                log.warning("lost on the flagged topic at %s ... %s", spots[:5], spots[-5:])
        return verdict
