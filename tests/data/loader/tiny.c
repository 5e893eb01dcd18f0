/* Tiny Cortex-M3 program for the loader and symbol-table tests.
 *
 * Linked twice: as a "bootloader" at 0x08000000 (boot.ld) and as an
 * "application" at 0x08008000 (app.ld), so the two images share function
 * names (SysTick_Handler, main) but live at different addresses.
 * It is never executed by the tests; what matters is its layout: a vector
 * table at the start of flash, sized functions, a function without a size,
 * weak handler aliases, a const object, and an initialised .data variable
 * whose VMA is in SRAM but whose initialiser (LMA) sits in flash. */

#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

volatile uint32_t counter = 0x12345678u;  /* .data: VMA in RAM, LMA in flash */
volatile uint32_t ticks;                  /* .bss: not in the image at all   */
const uint16_t table[8] = {1, 2, 3, 5, 8, 13, 21, 34};

void Reset_Handler(void);
void Default_Handler(void);
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
int main(void);
uint32_t bare_label(uint32_t x);
uint32_t image_only(uint32_t x);

/* A function written in assembly without .size: the symbol has size 0. */
__asm__(".text\n"
        ".global bare_label\n"
        ".type bare_label, %function\n"
        ".thumb_func\n"
        "bare_label:\n"
        "  adds r0, r0, #1\n"
        "  adds r0, r0, #2\n"
        "  bx lr\n");

void SysTick_Handler(void)
{
    ticks = ticks + 1u;
}

#ifdef APP
uint32_t image_only(uint32_t x) __attribute__((alias("app_only")));
uint32_t app_only(uint32_t x)
{
    return x * 3u + table[x & 7u];
}
#else
uint32_t image_only(uint32_t x) __attribute__((alias("boot_only")));
uint32_t boot_only(uint32_t x)
{
    return x ^ table[x & 7u];
}
#endif

void Default_Handler(void)
{
    for (;;) {
    }
}

int main(void)
{
    for (;;) {
        counter = counter + image_only(ticks) + bare_label(ticks);
    }
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0u;
    }
    main();
}

__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, Reset_Handler, NMI_Handler, HardFault_Handler,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, SysTick_Handler,
};
