"""fraudstream: a Kafka-native, two-stage streaming fraud detector."""

__version__ = "0.1.0"
