"""The one error tree of fraudstream.

    FraudstreamError                 every error the project raises on purpose
    ├── ConfigError                  bad settings, missing file, bad CLI value
    ├── BrokerError                  broker unreachable, embedded broker failed to start
    ├── TopicError                   unknown or uncreatable topic
    ├── DataError                    bad CSV input (names the row and column)
    ├── MessageError                 one Kafka message cannot be processed (goes to a DLQ)
    │   ├── DecodeError              bytes are not valid UTF-8 JSON object    (permanent)
    │   ├── ValidationError          JSON misses fields or has bad values     (permanent)
    │   └── TransientError           model failure, downstream timeout        (retried)
    ├── RuleError                    a rule file or rule set is invalid (file:line: message)
    ├── ModelError                   missing model, feature mismatch, bad artifact
    └── StateError                   unreadable stage-1 checkpoint (the partition is rebuilt)

Command-line code catches ``FraudstreamError`` and prints one line without a traceback.
"""

from __future__ import annotations


class FraudstreamError(Exception):
    """Base class of every deliberate fraudstream error."""


class ConfigError(FraudstreamError):
    pass


class BrokerError(FraudstreamError):
    pass


class TransactionAbortable(BrokerError):
    """The producer's Kafka transaction failed and must be aborted (exactly-once): the batch is
    rewound and screened again. Outside a transaction it stops the worker like any
    ``BrokerError``."""


class TopicError(FraudstreamError):
    pass


class DataError(FraudstreamError):
    pass


class MessageError(FraudstreamError):
    """A single message cannot be processed; ``kind`` names the dead-letter error kind."""

    kind = "error"
    permanent = True


class DecodeError(MessageError):
    kind = "decode"


class ValidationError(MessageError):
    kind = "validation"


class TransientError(MessageError):
    kind = "transient"
    permanent = False


class RuleError(FraudstreamError):
    """One or more rule problems; ``problems`` holds ``file:line: message`` strings."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid rule set")


class ModelError(FraudstreamError):
    pass


class StateError(FraudstreamError):
    """A stage-1 checkpoint that cannot be read (format, version, truncation): the partition is
    rebuilt from its history instead."""
