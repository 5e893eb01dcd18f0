"""The GDB remote stub: the emulated board under a debugger's control (``--gdb``)."""
