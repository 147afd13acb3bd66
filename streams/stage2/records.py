"""The output records of a decided stage-2 batch: the card table's changelog records and the
decisions. Pure logic; ``BatchOutput`` produces them.

The card table is written the way faust writes it (same changelog topic, JSON key and value
bytes, so faust's recovery reads them back), once per card per batch, to the card's flagged-topic
partition: faust's per-record changelog path cost more event-loop time than the scoring, and
these records are delivered before the batch is acked all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import orjson

from streams.stage2.context import apply_card_contexts
from streams.stage2.output import ANY_PARTITION, Headers, Record


class OutputRecords:
    """Builds a batch's records, writing the new card contexts into ``cards`` (the table's
    data) and each decision's ``sent_ms`` (taken out of its value, into a header) to
    ``on_sent``."""

    def __init__(
        self,
        cards: MutableMapping[str, Any],
        changelog: str,
        decisions_topic: str,
        on_sent: Callable[[int], None] | None = None,
        decisions_in_source_partition: bool = False,
    ):
        self.cards = cards
        # exactly-once: a decision's partition names its record's source partition, whose
        # transaction it joins (any partition otherwise: the producer's partitioner)
        self.decisions_in_source_partition = decisions_in_source_partition
        self.changelog = changelog
        self.decisions_topic = decisions_topic
        self.on_sent = on_sent

    def build(
        self,
        records: list[dict[str, Any]],
        partitions: Iterable[int],
        decided: list[dict[str, Any]],
    ) -> list[Record]:
        """Records for ``decided`` (decisions of ``records``, whose flagged-topic partitions are
        ``partitions``): one changelog record per card, then one decision per record. Sets each
        decision's ``card_context`` and removes its ``sent_ms``."""
        source = {
            str(r.get("transaction_id")): (int(r.get("ts_ms") or 0), p)
            for r, p in zip(records, partitions, strict=True)
        }
        by_card: dict[str, list[tuple[dict[str, Any], int]]] = {}
        card_partition: dict[str, int] = {}
        for decision in decided:
            ts_ms, partition = source.get(str(decision.get("transaction_id")), (0, ANY_PARTITION))
            card = str(decision.get("card_id"))
            by_card.setdefault(card, []).append((decision, ts_ms))
            card_partition[card] = partition
        out: list[Record] = []
        data = self.cards
        dumps = orjson.dumps
        for card, items in by_card.items():
            ctx = apply_card_contexts(data.get(card) or {}, items)
            data[card] = ctx
            out.append((self.changelog, dumps(card), dumps(ctx), [], card_partition[card]))
        topic = self.decisions_topic
        in_source = self.decisions_in_source_partition
        for decision in decided:
            sent = decision.pop("sent_ms", None)
            headers: Headers = [("sent_ms", str(sent).encode())] if sent is not None else []
            if sent is not None and self.on_sent is not None:
                self.on_sent(int(sent))
            key = str(decision["transaction_id"]).encode()
            partition = ANY_PARTITION
            if in_source:
                partition = source.get(str(decision.get("transaction_id")), (0, ANY_PARTITION))[1]
            out.append((topic, key, dumps(decision), headers, partition))
        return out
