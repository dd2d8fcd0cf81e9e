"""Shipped search spaces (YAML). ``autocomp spaces list`` shows them."""
