"""Built-in search strategies, one module each, registered under the ``nas.strategies`` entry-point group."""
