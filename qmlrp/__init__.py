"""qmlrp: the command line that wires molgraph, gcnn, lrp and dae together."""
__version__ = "0.1.0"
