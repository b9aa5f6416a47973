"""Pure decisions: no I/O, no clocks (time is passed in). Table- and property-tested."""
