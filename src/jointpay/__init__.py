"""jointpay: offline smart-card payments with joint Schnorr signatures (WO 98/25220)."""

__version__ = "0.1.0"
