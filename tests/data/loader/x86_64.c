/* Host (x86-64) program: the loader must reject it as the wrong architecture. */
void _start(void)
{
    for (;;) {
    }
}
