"""A local, contract-strict implementation of Button's Order API (Button offers no sandbox)."""
