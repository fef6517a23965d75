/* Tree-ensemble walker for the enclave's interpreter (ONNX-ML TreeEnsembleClassifier/Regressor).
 *
 * Why C: enclave/native.py. The interpreter checks an ensemble's attributes and flattens it once
 * per node (enclave/interpreter.py, _compile_forest); compile() copies those flat tables here and
 * checks every index in them, walk() then sums the reached leaves' weights for every row:
 *
 *   compile(roots i64[T], feats i64[M], thresholds f32[M], codes u8[M], next i64[2M],
 *           tracks u8[M] or None, table f64[K*M], has u8[K*M], n_features) -> capsule
 *   walk(forest, x f32[N*F], rows N, scores f64[N*K] (written))
 *   classify(forest, x, rows, base, post, positive, labels, label_out, probs_out): see classify()
 *
 * M nodes; the false branch of node k is next[k], the true one next[M + k]; a leaf (code 6) ends
 * the walk; table and has are target-major ([K][M]). A NaN feature goes the true way where tracks
 * says so, as onnxruntime does; every comparison is in float32 as onnxruntime's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffers.h"

enum { LEQ, LT, GTE, GT, EQ, NEQ, LEAF };

typedef struct {
    Py_ssize_t trees, nodes, targets, features;
    int64_t *roots, *feats, *next;
    float *thresholds;
    uint8_t *codes, *tracks; /* tracks NULL: no node sends NaN the true way */
    double *table;
    uint8_t *has;
} forest_t;

static const char *CAPSULE = "splitseal.trees.forest";

static void forest_free(forest_t *f) {
    if (!f) return;
    free(f->roots); free(f->feats); free(f->next); free(f->thresholds);
    free(f->codes); free(f->tracks); free(f->table); free(f->has);
    free(f);
}

static void capsule_free(PyObject *capsule) {
    forest_free((forest_t *)PyCapsule_GetPointer(capsule, CAPSULE));
}

static void *copy_out(Py_buffer *view) {
    void *p = malloc(view->len ? (size_t)view->len : 1);
    if (p) memcpy(p, view->buf, (size_t)view->len);
    return p;
}

#define I64 "qlL"  /* int64 as numpy exports it on LP64 */

static PyObject *compile(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_roots, *o_feats, *o_thr, *o_codes, *o_next, *o_tracks, *o_table, *o_has;
    Py_ssize_t features;
    if (!PyArg_ParseTuple(args, "OOOOOOOOn", &o_roots, &o_feats, &o_thr, &o_codes, &o_next, &o_tracks,
                          &o_table, &o_has, &features))
        return NULL;
    Py_buffer b[8];
    int got = 0;
    forest_t *f = calloc(1, sizeof *f);
    if (!f) return PyErr_NoMemory();
    if (get_buffer(o_roots, &b[got], "roots", I64, 8, -1, 0) < 0) goto fail;
    f->trees = b[got++].len / 8;
    if (get_buffer(o_feats, &b[got], "feats", I64, 8, -1, 0) < 0) goto fail;
    f->nodes = b[got++].len / 8;
    Py_ssize_t m = f->nodes;
    if (get_buffer(o_thr, &b[got++], "thresholds", "f", 4, m, 0) < 0) { got--; goto fail; }
    if (get_buffer(o_codes, &b[got++], "codes", "B", 1, m, 0) < 0) { got--; goto fail; }
    if (get_buffer(o_next, &b[got++], "next", I64, 8, 2 * m, 0) < 0) { got--; goto fail; }
    int tracked = o_tracks != Py_None;
    if (tracked && get_buffer(o_tracks, &b[got++], "tracks", "B?", 1, m, 0) < 0) { got--; goto fail; }
    if (get_buffer(o_table, &b[got], "table", "d", 8, -1, 0) < 0) goto fail;
    if (m == 0 || b[got].len / 8 % m != 0) {
        got++;
        PyErr_SetString(PyExc_ValueError, "table: not a whole number of targets");
        goto fail;
    }
    f->targets = b[got++].len / 8 / m;
    if (get_buffer(o_has, &b[got++], "has", "B?", 1, f->targets * m, 0) < 0) { got--; goto fail; }
    f->features = features;
    int i = 0;
    f->roots = copy_out(&b[i++]); f->feats = copy_out(&b[i++]); f->thresholds = copy_out(&b[i++]);
    f->codes = copy_out(&b[i++]); f->next = copy_out(&b[i++]);
    if (tracked) f->tracks = copy_out(&b[i++]);
    f->table = copy_out(&b[i++]); f->has = copy_out(&b[i++]);
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    got = 0;
    if (!f->roots || !f->feats || !f->thresholds || !f->codes || !f->next || (tracked && !f->tracks) ||
        !f->table || !f->has) {
        forest_free(f);
        return PyErr_NoMemory();
    }
    /* every index the walk will follow is in range, so walk() never checks one */
    for (Py_ssize_t t = 0; t < f->trees; t++)
        if (f->roots[t] < 0 || f->roots[t] >= m) { PyErr_SetString(PyExc_ValueError, "a root is out of range"); goto bad; }
    for (Py_ssize_t k = 0; k < m; k++) {
        if (f->codes[k] > LEAF) { PyErr_SetString(PyExc_ValueError, "a node mode is out of range"); goto bad; }
        if (f->codes[k] == LEAF) continue;
        if (f->feats[k] < 0 || f->feats[k] >= features) { PyErr_SetString(PyExc_ValueError, "a feature is out of range"); goto bad; }
        if (f->next[k] < 0 || f->next[k] >= m || f->next[m + k] < 0 || f->next[m + k] >= m) {
            PyErr_SetString(PyExc_ValueError, "a branch is out of range");
            goto bad;
        }
    }
    PyObject *capsule = PyCapsule_New(f, CAPSULE, capsule_free);
    if (!capsule) forest_free(f);
    return capsule;
bad:
    forest_free(f);
    return NULL;
fail:
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    forest_free(f);
    return NULL;
}

static inline int goes_true(uint8_t code, float v, float th) {
    switch (code) {
    case LEQ: return v <= th;
    case LT: return v < th;
    case GTE: return v >= th;
    case GT: return v > th;
    case EQ: return v == th;
    default: return v != th; /* NEQ */
    }
}

/* scores[r*K + c]: the sum of row r's reached leaves' weights for target c; reached (if not
 * NULL): whether any of them carries a weight. Both are overwritten. */
static void walk_rows(const forest_t *f, const float *x, Py_ssize_t rows, double *scores, uint8_t *reached) {
    const Py_ssize_t m = f->nodes, k_targets = f->targets, nf = f->features;
    memset(scores, 0, sizeof(double) * (size_t)(rows * k_targets));
    if (reached) memset(reached, 0, (size_t)(rows * k_targets));
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = x + r * nf;
        double *out = scores + r * k_targets;
        for (Py_ssize_t t = 0; t < f->trees; t++) {
            int64_t k = f->roots[t];
            /* a walk is at most m steps: compile() checked the indices, the interpreter the cycles */
            for (Py_ssize_t step = 0; f->codes[k] != LEAF && step < m; step++) {
                float v = row[f->feats[k]];
                int go = goes_true(f->codes[k], v, f->thresholds[k]);
                if (f->tracks && isnan(v) && f->tracks[k]) go = 1;
                k = f->next[go ? m + k : k];
            }
            for (Py_ssize_t c = 0; c < k_targets; c++) {
                out[c] += f->table[c * m + k];
                if (reached) reached[r * k_targets + c] |= f->has[c * m + k];
            }
        }
    }
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_forest, *o_x, *o_scores;
    Py_ssize_t rows;
    if (!PyArg_ParseTuple(args, "OOnO", &o_forest, &o_x, &rows, &o_scores)) return NULL;
    forest_t *f = PyCapsule_GetPointer(o_forest, CAPSULE);
    if (!f) return NULL;
    if (rows < 0) { PyErr_SetString(PyExc_ValueError, "rows must be >= 0"); return NULL; }
    Py_buffer bx, bs;
    if (get_buffer(o_x, &bx, "x", "f", 4, rows * f->features, 0) < 0) return NULL;
    if (get_buffer(o_scores, &bs, "scores", "d", 8, rows * f->targets, 1) < 0) { PyBuffer_Release(&bx); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    walk_rows(f, bx.buf, rows, bs.buf, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bs);
    Py_RETURN_NONE;
}

enum { POST_NONE, POST_LOGISTIC, POST_SOFTMAX };

static inline float logistic(float v) { return 1.0f / (1.0f + expf(-v)); }

static void post_row(float *p, Py_ssize_t k, int post) {
    if (post == POST_LOGISTIC) {
        for (Py_ssize_t c = 0; c < k; c++) p[c] = logistic(p[c]);
    } else if (post == POST_SOFTMAX) {
        float top = p[0], sum = 0.0f;
        for (Py_ssize_t c = 1; c < k; c++) top = p[c] > top ? p[c] : top;
        for (Py_ssize_t c = 0; c < k; c++) sum += (p[c] = expf(p[c] - top));
        for (Py_ssize_t c = 0; c < k; c++) p[c] /= sum;
    }
}

/* classify(forest, x f32[N*F], rows N, base f64[0|1|2|K], post, positive, labels i64[K],
 *          label_out i64[N] (written), probs_out f32[N*K] (written))
 * TreeEnsembleClassifier's two outputs as onnxruntime computes them. K > 2: scores plus base,
 * the label the arg-max of the scores (of the classes some leaf scored, without base values),
 * probabilities the post transform of the scores. K == 2 (one score, class 0's, as skl2onnx
 * writes it): s = score + base[0]; with two base values the probabilities are post([s, 0]),
 * otherwise [sigmoid(-s), sigmoid(s)] (LOGISTIC), [1 - s, s] (every weight >= 0) or [-s, s];
 * the label is labels[1] where s > 0.5 (every weight >= 0) or s > 0, else labels[0]. */
static PyObject *classify(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_forest, *o_x, *o_base, *o_labels, *o_label, *o_probs;
    Py_ssize_t rows;
    int post, positive;
    if (!PyArg_ParseTuple(args, "OOnOiiOOO", &o_forest, &o_x, &rows, &o_base, &post, &positive, &o_labels,
                          &o_label, &o_probs))
        return NULL;
    forest_t *f = PyCapsule_GetPointer(o_forest, CAPSULE);
    if (!f) return NULL;
    const Py_ssize_t k = f->targets;
    if (rows < 0 || k < 2 || post < POST_NONE || post > POST_SOFTMAX) {
        PyErr_SetString(PyExc_ValueError, "rows, classes or post transform out of range");
        return NULL;
    }
    Py_buffer b[5];
    int got = 0;
    if (get_buffer(o_x, &b[got], "x", "f", 4, rows * f->features, 0) < 0) goto fail;
    got++;
    if (get_buffer(o_base, &b[got], "base", "d", 8, -1, 0) < 0) goto fail;
    const Py_ssize_t n_base = b[got++].len / 8;
    if (k > 2 ? n_base != 0 && n_base != k : n_base > 2) {
        PyErr_Format(PyExc_ValueError, "base: %zd values for %zd classes", n_base, k);
        goto fail;
    }
    if (get_buffer(o_labels, &b[got], "labels", I64, 8, k, 0) < 0) goto fail;
    got++;
    if (get_buffer(o_label, &b[got], "label_out", I64, 8, rows, 1) < 0) goto fail;
    got++;
    if (get_buffer(o_probs, &b[got], "probs_out", "f", 4, rows * k, 1) < 0) goto fail;
    got++;
    const float *x = b[0].buf;
    const double *base = b[1].buf;
    const int64_t *labels = b[2].buf;
    int64_t *label = b[3].buf;
    float *probs = b[4].buf;
    double *scores = malloc(sizeof(double) * (size_t)(rows * k + 1));
    uint8_t *reached = k > 2 && n_base == 0 ? malloc((size_t)(rows * k + 1)) : NULL;
    if (!scores || (k > 2 && n_base == 0 && !reached)) {
        free(scores);
        free(reached);
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    walk_rows(f, x, rows, scores, reached);
    for (Py_ssize_t r = 0; r < rows; r++) {
        const double *sc = scores + r * k;
        float *p = probs + r * k;
        if (k > 2) {
            Py_ssize_t best = 0;
            double top = -INFINITY;
            for (Py_ssize_t c = 0; c < k; c++) {
                double v = sc[c] + (n_base ? base[c] : 0.0);
                double masked = n_base || reached[r * k + c] ? v : -INFINITY;
                if (masked > top || (c == 0)) { top = masked; best = c; }
                p[c] = (float)v;
            }
            label[r] = labels[best];
            post_row(p, k, post);
            continue;
        }
        double v = sc[0] + (n_base ? base[0] : 0.0);
        if (n_base == 2) {
            p[0] = (float)v;
            p[1] = 0.0f;
            post_row(p, 2, post);
        } else {
            float s32 = (float)v;
            if (post == POST_LOGISTIC) { p[0] = logistic(-s32); p[1] = logistic(s32); }
            else if (positive) { p[0] = 1.0f - s32; p[1] = s32; }
            else { p[0] = -s32; p[1] = s32; }
        }
        label[r] = v > (positive ? 0.5 : 0.0) ? labels[1] : labels[0];
    }
    Py_END_ALLOW_THREADS
    free(scores);
    free(reached);
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"compile", compile, METH_VARARGS, "Copy and check a flattened ensemble; returns the forest."},
    {"walk", walk, METH_VARARGS, "Sum the reached leaves' weights of every row into scores."},
    {"classify", classify, METH_VARARGS, "TreeEnsembleClassifier's label and probabilities of every row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "trees", "Tree-ensemble walker.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_trees(void) { return PyModule_Create(&module); }
