"""Checkpoints of stage-1 state: the container format (``codec``), the partition state in it
(``stage1``) and the compacted Kafka topic that holds them (``topic``)."""
