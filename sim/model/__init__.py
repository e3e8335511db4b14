"""The SimPy world: population, shopper and device processes, identity and push reactions."""
