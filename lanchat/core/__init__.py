"""Pure, sans-IO protocol core: standard library only."""
