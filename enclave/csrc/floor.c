/* The interpreter's per-call floor (enclave/interpreter.py).
 *
 * Why C: enclave/native.py. A loop that numpy runs slowly at the sizes of the heads:
 *
 *   all_finite(x f32 buffer) -> bool
 *       the input check of every call: one pass, no temporary (np.isfinite(x).all() allocates a
 *       mask and reduces it: 4 us on 512 floats, most of a one-node head's floor);
 *
 * Safety: a buffer that is not C-contiguous float32 raises ValueError; the loop reads its length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A C-contiguous float32 buffer of exactly `count` floats (count < 0: any length). */
static int get_floats(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t count, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *fmt = view->format ? view->format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    if (view->itemsize != 4 || strcmp(fmt, "f") != 0) {
        PyErr_Format(PyExc_ValueError, "%s: not float32 (format %s)", what, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    if (count >= 0 && view->len != count * 4) {
        PyErr_Format(PyExc_ValueError, "%s: %zd floats, expected %zd", what, view->len / 4, count);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *all_finite(PyObject *self, PyObject *obj) {
    (void)self;
    Py_buffer view;
    if (get_floats(obj, &view, "x", -1, 0) < 0) return NULL;
    const uint32_t *bits = view.buf;
    Py_ssize_t n = view.len / 4;
    uint32_t top = 0;
    /* the largest magnitude's bits: a float is NaN or infinite iff its exponent is all ones,
     * i.e. its bits without the sign are >= those of infinity (a max reduction vectorises) */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t b = bits[i] & 0x7fffffffu;
        top = b > top ? b : top;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(top < 0x7f800000u);
}

static PyMethodDef methods[] = {
    {"all_finite", all_finite, METH_O, "True if no element of a float32 buffer is NaN or infinite."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "floor", "Per-call checks.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_floor(void) { return PyModule_Create(&module); }
