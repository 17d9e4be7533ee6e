"""Built-in search spaces, one module each, registered under the ``nas.search_spaces`` entry-point group."""
