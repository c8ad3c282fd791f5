/* derm_runtime.h: C interface of derm-runtime (a skin-lesion classifier with
 * the model compiled in). Link libderm_capi.a (cargo build --release -p
 * derm-capi; see examples/c) or call through any Rust binary that exports it.
 * Nothing allocates; the caller owns the arena. Thread safety: one arena per
 * concurrent call. */
#ifndef DERM_RUNTIME_H
#define DERM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DERM_OK 0
#define DERM_ERR_NULL (-1)        /* a required pointer is NULL */
#define DERM_ERR_ARENA (-2)       /* arena too small or misaligned */
#define DERM_ERR_EMPTY_IMAGE (-3) /* width or height is zero */
#define DERM_ERR_LENGTH (-4)      /* a length does not match the model */

/* Bytes and alignment of the arena: aligned_alloc(derm_arena_align(), derm_arena_size()). */
size_t derm_arena_size(void);
size_t derm_arena_align(void);
/* Bytes of stack derm_classify and derm_run need at most, beyond the caller's frames: give a
 * thread that calls them at least this much (pthread_attr_setstacksize). */
size_t derm_stack_size(void);
/* Number of classes: length of the probability / logit outputs. */
size_t derm_num_classes(void);
/* Floats read by derm_run: 3 * H * W, planar RGB, normalized. */
size_t derm_input_len(void);
/* Static NUL-terminated name of class `index`, or NULL when out of range. */
const char *derm_class_name(size_t index);

/* Classifies an RGB8 image (width * height * 3 bytes, row-major, R G B).
 * On DERM_OK writes the class index to *class_out and, unless
 * probabilities_out is NULL, derm_num_classes() probabilities. */
int derm_classify(const uint8_t *rgb, size_t rgb_len, size_t width, size_t height,
                  void *arena, size_t arena_bytes, size_t *class_out,
                  float *probabilities_out);

/* Runs the network on a preprocessed input and writes the logits. */
int derm_run(const float *input, size_t input_len, void *arena, size_t arena_bytes,
             float *logits_out, size_t logits_len);

#ifdef __cplusplus
}
#endif

#endif /* DERM_RUNTIME_H */
