"""Kafka I/O at the edges: clients, the embedded broker, topics, dead letters."""
