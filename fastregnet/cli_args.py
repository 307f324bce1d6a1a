"""Argument types and the parser class of the `fastregnet` command: every user error is one line and exit code 2."""

from __future__ import annotations

import argparse

__all__ = ["OneLineErrorParser", "positive_int", "non_negative_int"]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; this prints only `prog: error: message`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
