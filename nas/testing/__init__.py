"""What plugin authors test with: ``conformance``, the checks every search space and strategy must pass."""
