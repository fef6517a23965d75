/* The kernels' buffer arguments: every array a kernel reads or writes arrives through
 * get_buffer, which checks that it is C-contiguous, of the expected item type and size, and
 * (when count >= 0) exactly `count` items long; on failure it raises ValueError naming the
 * argument and releases what it took. Included by every kernel source in enclave/csrc, so it is part of
 * each kernel's digest (enclave/native.py) and of the enclave's measurement. */
#ifndef SPLITSEAL_BUFFERS_H
#define SPLITSEAL_BUFFERS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* `formats`: the struct-module codes accepted for one item of `itemsize` bytes. */
static inline int get_buffer(PyObject *obj, Py_buffer *view, const char *what, const char *formats,
                             Py_ssize_t itemsize, Py_ssize_t count, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *fmt = view->format ? view->format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    if (view->itemsize != itemsize || strlen(fmt) != 1 || !strchr(formats, *fmt)) {
        PyErr_Format(PyExc_ValueError, "%s: wrong item type (format %s, %zd bytes)", what, view->format,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (count >= 0 && view->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items, expected %zd", what, view->len / itemsize, count);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A float32 buffer of exactly `count` items (any number if count < 0). */
static inline int get_floats(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t count, int writable) {
    return get_buffer(obj, view, what, "f", 4, count, writable);
}

/* The `x` a kernel reads and the `out` it writes, both exactly `count` float32 items; on failure
 * neither is held. */
static inline int get_in_out(PyObject *o_x, Py_buffer *bx, PyObject *o_out, Py_buffer *bo, Py_ssize_t count) {
    if (get_floats(o_x, bx, "x", count, 0) < 0) return -1;
    if (get_floats(o_out, bo, "out", count, 1) < 0) {
        PyBuffer_Release(bx);
        return -1;
    }
    return 0;
}

#endif
