"""``python -m jointpay``: the same as the ``jointpay`` command."""

from jointpay.cli.main import run

run()
