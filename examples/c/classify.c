/* classify.c: classifies one skin-lesion photo with derm-runtime from C.
 *
 *   classify PHOTO.ppm
 *
 * Reads a binary PPM (P6, maxval 255), runs derm_classify with an arena this
 * program owns, and prints
 *
 *   predicted NAME
 *   NAME PROBABILITY      (one line per class, in the model's class order)
 *
 * Exits 0 on success, 1 with a message on stderr on any error (unreadable or
 * malformed file, or any error code from the library), 2 on bad usage.
 * Build: see README.md beside this file. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derm_runtime.h"

/* A whole file in memory. */
struct file_bytes {
    unsigned char *data;
    size_t len;
};

/* Reads all of `path` into `out`; prints why and returns 0 on failure. */
static int read_file(const char *path, struct file_bytes *out) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 0;
    }
    size_t cap = 1 << 16;
    size_t len = 0;
    unsigned char *data = malloc(cap);
    for (;;) {
        if (data == NULL) {
            fprintf(stderr, "%s: out of memory\n", path);
            fclose(f);
            return 0;
        }
        len += fread(data + len, 1, cap - len, f);
        if (len < cap) {
            break;
        }
        /* Grow geometrically; a failed realloc leaves `data` to free. */
        unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(data, cap * 2) : NULL;
        if (bigger == NULL) {
            free(data);
        }
        data = bigger;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "%s: read error\n", path);
        free(data);
        return 0;
    }
    out->data = data;
    out->len = len;
    return 1;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Reads one unsigned decimal header field at *pos, skipping whitespace and
 * '#' comments before it. Returns 0 when there is none or it overflows. */
static int header_number(const struct file_bytes *f, size_t *pos, size_t *value) {
    size_t p = *pos;
    for (;;) {
        while (p < f->len && is_space(f->data[p])) {
            p++;
        }
        if (p < f->len && f->data[p] == '#') {
            while (p < f->len && f->data[p] != '\n') {
                p++;
            }
            continue;
        }
        break;
    }
    size_t v = 0;
    size_t start = p;
    while (p < f->len && f->data[p] >= '0' && f->data[p] <= '9') {
        size_t digit = (size_t)(f->data[p] - '0');
        if (v > (SIZE_MAX - digit) / 10) {
            return 0;
        }
        v = v * 10 + digit;
        p++;
    }
    if (p == start) {
        return 0;
    }
    *pos = p;
    *value = v;
    return 1;
}

/* Where the pixels of a parsed PPM are. */
struct ppm {
    const uint8_t *rgb;
    size_t rgb_len;
    size_t width;
    size_t height;
};

/* Parses a binary PPM (P6, maxval 255) in `f`; prints why, naming `path`,
 * and returns 0 when it is anything else or truncated. */
static int parse_ppm(const char *path, const struct file_bytes *f, struct ppm *out) {
    if (f->len < 2 || f->data[0] != 'P' || f->data[1] != '6') {
        fprintf(stderr, "%s: not a binary PPM (expected magic \"P6\")\n", path);
        return 0;
    }
    size_t pos = 2;
    size_t width, height, maxval;
    if (!header_number(f, &pos, &width) || !header_number(f, &pos, &height) ||
        !header_number(f, &pos, &maxval)) {
        fprintf(stderr, "%s: truncated or malformed PPM header\n", path);
        return 0;
    }
    if (maxval != 255) {
        fprintf(stderr, "%s: maxval %zu is not supported (only 8-bit PPM, maxval 255)\n",
                path, maxval);
        return 0;
    }
    /* Exactly one whitespace byte separates the header from the pixels. */
    if (pos >= f->len || !is_space(f->data[pos])) {
        fprintf(stderr, "%s: truncated or malformed PPM header\n", path);
        return 0;
    }
    pos++;
    if (height != 0 && width > SIZE_MAX / 3 / height) {
        fprintf(stderr, "%s: %zu x %zu pixels is too large\n", path, width, height);
        return 0;
    }
    size_t need = width * height * 3;
    size_t have = f->len - pos;
    if (have < need) {
        fprintf(stderr, "%s: truncated PPM: %zu x %zu needs %zu pixel bytes, file has %zu\n",
                path, width, height, need, have);
        return 0;
    }
    /* Anything after the first image (a multi-image PPM) is ignored. */
    out->rgb = f->data + pos;
    out->rgb_len = need;
    out->width = width;
    out->height = height;
    return 1;
}

/* The meaning of each error code in derm_runtime.h. */
static const char *error_message(int code) {
    switch (code) {
    case DERM_ERR_NULL:
        return "a required pointer is NULL (DERM_ERR_NULL)";
    case DERM_ERR_ARENA:
        return "the arena is too small or misaligned (DERM_ERR_ARENA)";
    case DERM_ERR_EMPTY_IMAGE:
        return "the image has zero width or height (DERM_ERR_EMPTY_IMAGE)";
    case DERM_ERR_LENGTH:
        return "the pixel buffer length does not match width x height x 3 (DERM_ERR_LENGTH)";
    default:
        return "unknown error code";
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PHOTO.ppm\n", argc > 0 ? argv[0] : "classify");
        return 2;
    }
    const char *path = argv[1];
    int status = 1;
    struct file_bytes file = {NULL, 0};
    void *arena = NULL;
    float *probabilities = NULL;

    struct ppm image;
    if (!read_file(path, &file) || !parse_ppm(path, &file, &image)) {
        goto done;
    }

    /* C11 aligned_alloc wants the size to be a multiple of the alignment. */
    size_t align = derm_arena_align();
    size_t arena_bytes = (derm_arena_size() + align - 1) / align * align;
    arena = aligned_alloc(align, arena_bytes);
    size_t num_classes = derm_num_classes();
    probabilities = malloc(num_classes * sizeof *probabilities);
    if (arena == NULL || probabilities == NULL) {
        fprintf(stderr, "out of memory for the %zu-byte arena\n", arena_bytes);
        goto done;
    }

    size_t class_index = SIZE_MAX;
    int rc = derm_classify(image.rgb, image.rgb_len, image.width, image.height, arena,
                           arena_bytes, &class_index, probabilities);
    if (rc != DERM_OK) {
        fprintf(stderr, "%s: derm_classify failed with %d: %s\n", path, rc, error_message(rc));
        goto done;
    }
    const char *predicted = derm_class_name(class_index);
    if (predicted == NULL) {
        fprintf(stderr, "%s: class index %zu out of range\n", path, class_index);
        goto done;
    }
    printf("predicted %s\n", predicted);
    for (size_t i = 0; i < num_classes; i++) {
        const char *name = derm_class_name(i);
        printf("%s %.6f\n", name != NULL ? name : "?", (double)probabilities[i]);
    }
    status = fflush(stdout) == 0 ? 0 : 1;

done:
    free(probabilities);
    free(arena);
    free(file.data);
    return status;
}
