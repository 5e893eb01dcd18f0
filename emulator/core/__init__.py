"""The chip: machine, exception engine, bus, time, boards, images, state files."""
