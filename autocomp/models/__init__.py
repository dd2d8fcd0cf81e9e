"""Models: the builtin zoo, torchvision and user builders (``zoo``), compute-layer discovery
(``layers``), and adapters that make attention projections reachable (``adapters``)."""
