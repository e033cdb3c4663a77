# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Video-effect kernels on the planes of a decoded YUV420 frame, in place.

Every function takes 2-D uint8 planes whose rows are contiguous (stride 1 within a
row) but whose row stride may exceed the width, i.e. the view of a PyAV plane:

    a = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    view = a[:, :plane.width]

Bytes past the width of each row (the padding up to `line_size`) are never read or
written. The loops run without the GIL, allocate their scratch once per call, and
make no Python object per pixel or row. Nothing converts to RGB.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np

cdef enum:
    MAX_BOX_RADIUS = 32767      # window 2r+1 < 2**16 keeps the reciprocal division exact


cdef inline Py_ssize_t _imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef int _check_rows(Py_ssize_t w, Py_ssize_t s1, str name) except -1:
    if w > 1 and s1 != 1:
        raise ValueError(f"{name}: rows must be contiguous (element stride 1), got {s1}")
    return 0


cdef int _clip_rect(Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t x, Py_ssize_t y,
                    Py_ssize_t w, Py_ssize_t h, Py_ssize_t* out) noexcept:
    """Clip (x, y, w, h) to the plane; out = x0, y0, x1, y1. Returns 0 when empty."""
    if w <= 0 or h <= 0:
        return 0
    out[0] = _imax(x, 0)
    out[1] = _imax(y, 0)
    out[2] = _imin(x + w, pw)
    out[3] = _imin(y + h, ph)
    return out[2] > out[0] and out[3] > out[1]


# ---------------------------------------------------------------- box blur

ctypedef fused mul_t:
    uint32_t
    uint64_t

# Division by n = 2r+1 with rounding, as a multiply and shift: q = (v * mul) >> shift
# with mul = 2**shift // n + 1 is floor(v / n) whenever v < 2**shift / n. Here
# v < 256 * n, so it is exact if 256 * n * n < 2**shift. uint32 (vectorisable): shift 23,
# n <= 181, and v * mul < 2**32. uint64: shift 40, n < 2**16 (MAX_BOX_RADIUS).
DEF FAST_N = 181


cdef void _box_h(const uint8_t* src, Py_ssize_t sstride, uint8_t* dst, Py_ssize_t dstride,
                 Py_ssize_t w, Py_ssize_t h, Py_ssize_t r, mul_t mul, int shift) noexcept nogil:
    """Horizontal running-sum box of width 2r+1, edges clamped, rounded to nearest."""
    cdef Py_ssize_t x, y, m, a, b
    cdef mul_t s, rr = <mul_t>r
    cdef const uint8_t* row
    cdef uint8_t* out
    m = _imin(r, w - 1)
    a = _imin(r, w)             # x < a: the left edge is clamped
    b = _imax(w - r - 1, a)     # x >= b: the right edge is clamped
    for y in range(h):
        row = src + y * sstride
        out = dst + y * dstride
        s = <mul_t>(r + 1) * row[0] + <mul_t>(r - m) * row[w - 1]
        for x in range(1, m + 1):
            s += row[x]
        for x in range(a):
            out[x] = <uint8_t>(((s + rr) * mul) >> shift)
            s = s + row[_imin(x + r + 1, w - 1)] - row[0]
        for x in range(a, b):
            out[x] = <uint8_t>(((s + rr) * mul) >> shift)
            s += <mul_t>(<int>row[x + r + 1] - <int>row[x - r])
        for x in range(b, w):
            out[x] = <uint8_t>(((s + rr) * mul) >> shift)
            s = s + row[w - 1] - row[_imax(x - r, 0)]


cdef void _box_v(const uint8_t* src, Py_ssize_t sstride, uint8_t* dst, Py_ssize_t dstride,
                 Py_ssize_t w, Py_ssize_t h, Py_ssize_t r, mul_t mul, int shift,
                 mul_t* acc) noexcept nogil:
    """Vertical running-sum box (column accumulators in acc[w]), edges clamped."""
    cdef Py_ssize_t x, y, k, m
    cdef const uint8_t* add
    cdef const uint8_t* sub
    cdef uint8_t* out
    cdef mul_t rr = <mul_t>r
    m = _imin(r, h - 1)
    add = src
    sub = src + (h - 1) * sstride
    for x in range(w):
        acc[x] = (rr + 1) * add[x] + <mul_t>(r - m) * sub[x]
    for k in range(1, m + 1):
        add = src + k * sstride
        for x in range(w):
            acc[x] += add[x]
    for y in range(h):
        out = dst + y * dstride
        add = src + _imin(y + r + 1, h - 1) * sstride
        sub = src + _imax(y - r, 0) * sstride
        for x in range(w):
            out[x] = <uint8_t>(((acc[x] + rr) * mul) >> shift)
            acc[x] = acc[x] + add[x] - sub[x]


cdef int _box_blur_ptr(uint8_t* p, Py_ssize_t stride, Py_ssize_t w, Py_ssize_t h,
                       Py_ssize_t r, int passes) except -1:
    if w <= 0 or h <= 0 or r <= 0 or passes <= 0:
        return 0
    cdef uint64_t n = 2 * r + 1
    cdef uint32_t mul32 = ((<uint32_t>1) << 23) // <uint32_t>n + 1
    cdef uint64_t mul64 = ((<uint64_t>1) << 40) // n + 1
    cdef uint8_t* tmp = <uint8_t*>malloc(w * h)
    cdef void* acc = malloc(w * sizeof(uint64_t))
    cdef int i
    if tmp == NULL or acc == NULL:
        free(tmp)
        free(acc)
        raise MemoryError()
    with nogil:
        for i in range(passes):
            if n <= FAST_N:
                _box_h[uint32_t](p, stride, tmp, w, w, h, r, mul32, 23)
                _box_v[uint32_t](tmp, w, p, stride, w, h, r, mul32, 23, <uint32_t*>acc)
            else:
                _box_h[uint64_t](p, stride, tmp, w, w, h, r, mul64, 40)
                _box_v[uint64_t](tmp, w, p, stride, w, h, r, mul64, 40, <uint64_t*>acc)
    free(tmp)
    free(acc)
    return 0


cdef int _check_box_args(int radius, int passes) except -1:
    if radius < 0 or radius > MAX_BOX_RADIUS:
        raise ValueError(f"radius must be in 0..{MAX_BOX_RADIUS}, got {radius}")
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    return 0


def box_blur(uint8_t[:, :] plane, int radius, int passes=1):
    """Box-blur `plane` in place.

    One pass is a horizontal then a vertical box of width 2*radius+1 with edges
    clamped (replicated); each 1-D box rounds to nearest:
    out[x] = (sum(in[clamp(x+k)] for k in -r..r) + r) // (2r+1). `passes` repeats the
    pair (3 approximates a gaussian of sigma ~ radius). radius 0 or passes 0 is a no-op.
    """
    _check_box_args(radius, passes)
    cdef Py_ssize_t h = plane.shape[0], w = plane.shape[1]
    if h == 0 or w == 0:
        return
    _check_rows(w, plane.strides[1], "plane")
    _box_blur_ptr(&plane[0, 0], plane.strides[0], w, h, radius, passes)


def box_blur_rect(uint8_t[:, :] plane, int x, int y, int w, int h, int radius, int passes=1):
    """box_blur on the rectangle (x, y, w, h) clipped to the plane.

    The rectangle is treated as an image of its own: its edges are clamped, so only
    pixels inside it are read; everything outside is untouched. Equal to
    box_blur(plane[y0:y1, x0:x1], radius, passes) for the clipped rectangle.
    """
    _check_box_args(radius, passes)
    cdef Py_ssize_t ph = plane.shape[0], pw = plane.shape[1]
    cdef Py_ssize_t c[4]
    if ph == 0 or pw == 0 or not _clip_rect(pw, ph, x, y, w, h, c):
        return
    _check_rows(pw, plane.strides[1], "plane")
    _box_blur_ptr(&plane[c[1], c[0]], plane.strides[0], c[2] - c[0], c[3] - c[1], radius, passes)


# ---------------------------------------------------------------- pixelate, fill

def pixelate(uint8_t[:, :] plane, int x, int y, int w, int h, int block):
    """Mosaic the rectangle (x, y, w, h), clipped to the plane, in place.

    The grid of block x block cells starts at the clipped rectangle's top-left
    corner; cells at its right/bottom edges are cut short. Each cell becomes the
    mean of its pixels rounded to nearest: (sum + count // 2) // count.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    cdef Py_ssize_t ph = plane.shape[0], pw = plane.shape[1]
    cdef Py_ssize_t c[4]
    if ph == 0 or pw == 0 or not _clip_rect(pw, ph, x, y, w, h, c):
        return
    _check_rows(pw, plane.strides[1], "plane")
    cdef Py_ssize_t stride = plane.strides[0]
    cdef uint8_t* base = &plane[c[1], c[0]]
    cdef Py_ssize_t rw = c[2] - c[0], rh = c[3] - c[1]
    cdef Py_ssize_t b = block, by, bx, bh, bw, i, k
    cdef uint64_t s, cnt
    cdef uint8_t v
    cdef uint8_t* row
    cdef uint64_t* col = <uint64_t*>malloc(rw * sizeof(uint64_t))
    if col == NULL:
        raise MemoryError()
    with nogil:
        by = 0
        while by < rh:
            bh = _imin(b, rh - by)
            memset(col, 0, rw * sizeof(uint64_t))
            for k in range(bh):
                row = base + (by + k) * stride
                for i in range(rw):
                    col[i] += row[i]
            bx = 0
            while bx < rw:
                bw = _imin(b, rw - bx)
                s = 0
                for i in range(bx, bx + bw):
                    s += col[i]
                cnt = <uint64_t>(bw * bh)
                v = <uint8_t>((s + cnt // 2) // cnt)
                for k in range(bh):
                    memset(base + (by + k) * stride + bx, v, bw)
                bx += b
            by += b
    free(col)


def fill_rect(uint8_t[:, :] plane, int x, int y, int w, int h, int value):
    """Set the rectangle (x, y, w, h), clipped to the plane, to `value` (0..255)."""
    if value < 0 or value > 255:
        raise ValueError(f"value must be in 0..255, got {value}")
    cdef Py_ssize_t ph = plane.shape[0], pw = plane.shape[1]
    cdef Py_ssize_t c[4]
    if ph == 0 or pw == 0 or not _clip_rect(pw, ph, x, y, w, h, c):
        return
    _check_rows(pw, plane.strides[1], "plane")
    cdef Py_ssize_t stride = plane.strides[0], k
    cdef uint8_t* base = &plane[c[1], c[0]]
    with nogil:
        for k in range(c[3] - c[1]):
            memset(base + k * stride, value, c[2] - c[0])


# ---------------------------------------------------------------- blend, masks

def blend(uint8_t[:, :] dst, const uint8_t[:, :] src, const uint8_t[:, :] mask):
    """dst = (dst * (255 - m) + src * m + 127) // 255 per pixel, in place (exact).

    src and mask have dst's shape; m = 0 keeps dst, m = 255 takes src.
    """
    cdef Py_ssize_t h = dst.shape[0], w = dst.shape[1]
    if src.shape[0] != h or src.shape[1] != w or mask.shape[0] != h or mask.shape[1] != w:
        raise ValueError(
            f"shapes differ: dst {(h, w)}, src {(src.shape[0], src.shape[1])}, "
            f"mask {(mask.shape[0], mask.shape[1])}"
        )
    if h == 0 or w == 0:
        return
    _check_rows(w, dst.strides[1], "dst")
    _check_rows(w, src.strides[1], "src")
    _check_rows(w, mask.strides[1], "mask")
    cdef uint8_t* d0 = &dst[0, 0]
    cdef const uint8_t* s0 = &src[0, 0]
    cdef const uint8_t* m0 = &mask[0, 0]
    cdef Py_ssize_t ds = dst.strides[0], ss = src.strides[0], ms = mask.strides[0]
    cdef Py_ssize_t x, y
    cdef uint8_t* d
    cdef const uint8_t* s
    cdef const uint8_t* m
    cdef uint32_t v
    with nogil:
        for y in range(h):
            d = d0 + y * ds
            s = s0 + y * ss
            m = m0 + y * ms
            for x in range(w):
                v = <uint32_t>d[x] * (255 - m[x]) + <uint32_t>s[x] * m[x] + 127
                d[x] = <uint8_t>((v + 1 + (v >> 8)) >> 8)   # == v // 255 for v < 65535


def downscale_mask_2x(const uint8_t[:, :] mask, uint8_t[:, :] out):
    """out[i, j] = rounded mean of mask[2i:2i+2, 2j:2j+2] (the pixels that exist).

    out must have shape ((h + 1) // 2, (w + 1) // 2): a luma-sized mask to the
    chroma size of YUV420. Rounding: (sum + count // 2) // count.
    """
    cdef Py_ssize_t h = mask.shape[0], w = mask.shape[1]
    cdef Py_ssize_t oh = (h + 1) // 2, ow = (w + 1) // 2
    if out.shape[0] != oh or out.shape[1] != ow:
        raise ValueError(f"out must have shape {(oh, ow)}, got {(out.shape[0], out.shape[1])}")
    if h == 0 or w == 0:
        return
    _check_rows(w, mask.strides[1], "mask")
    _check_rows(ow, out.strides[1], "out")
    cdef const uint8_t* m0 = &mask[0, 0]
    cdef uint8_t* o0 = &out[0, 0]
    cdef Py_ssize_t ms = mask.strides[0], os = out.strides[0]
    cdef Py_ssize_t i, j, fw = w // 2
    cdef const uint8_t* a
    cdef const uint8_t* b
    cdef uint8_t* o
    with nogil:
        for i in range(h // 2):
            a = m0 + 2 * i * ms
            b = a + ms
            o = o0 + i * os
            for j in range(fw):
                o[j] = <uint8_t>((<uint32_t>a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1] + 2) >> 2)
            if w & 1:
                o[fw] = <uint8_t>((<uint32_t>a[w - 1] + b[w - 1] + 1) >> 1)
        if h & 1:
            a = m0 + (h - 1) * ms
            o = o0 + (oh - 1) * os
            for j in range(fw):
                o[j] = <uint8_t>((<uint32_t>a[2 * j] + a[2 * j + 1] + 1) >> 1)
            if w & 1:
                o[fw] = a[w - 1]


# ---------------------------------------------------------------- tone

def apply_lut(uint8_t[:, :] plane, const uint8_t[::1] lut):
    """plane[y, x] = lut[plane[y, x]] in place; lut has exactly 256 entries."""
    if lut.shape[0] != 256:
        raise ValueError(f"lut must have 256 entries, got {lut.shape[0]}")
    cdef Py_ssize_t h = plane.shape[0], w = plane.shape[1]
    if h == 0 or w == 0:
        return
    _check_rows(w, plane.strides[1], "plane")
    cdef uint8_t t[256]
    memcpy(t, &lut[0], 256)
    cdef uint8_t* p0 = &plane[0, 0]
    cdef Py_ssize_t stride = plane.strides[0], x, y
    cdef uint8_t* p
    with nogil:
        for y in range(h):
            p = p0 + y * stride
            for x in range(w):
                p[x] = t[p[x]]


def histogram(const uint8_t[:, :] plane, out=None):
    """Counts of each value 0..255 as a uint32[256] array.

    With `out` (a C-contiguous uint32 array of 256), it is overwritten and returned.
    """
    if out is None:
        out = np.zeros(256, np.uint32)
    cdef uint32_t[::1] o = out
    if o.shape[0] != 256:
        raise ValueError(f"out must have 256 entries, got {o.shape[0]}")
    cdef uint32_t hs[4][256]
    memset(hs, 0, sizeof(hs))
    cdef Py_ssize_t h = plane.shape[0], w = plane.shape[1], x, y, w4
    cdef const uint8_t* p0
    cdef const uint8_t* p
    cdef Py_ssize_t stride
    cdef int i
    if h > 0 and w > 0:
        _check_rows(w, plane.strides[1], "plane")
        p0 = &plane[0, 0]
        stride = plane.strides[0]
        w4 = w & ~3
        with nogil:
            for y in range(h):
                p = p0 + y * stride
                x = 0
                while x < w4:
                    hs[0][p[x]] += 1
                    hs[1][p[x + 1]] += 1
                    hs[2][p[x + 2]] += 1
                    hs[3][p[x + 3]] += 1
                    x += 4
                while x < w:
                    hs[0][p[x]] += 1
                    x += 1
    for i in range(256):
        o[i] = hs[0][i] + hs[1][i] + hs[2][i] + hs[3][i]
    return out


# ---------------------------------------------------------------- edge-preserving smoothing

cdef void _hsum2(const double* a, const double* b, double* oa, double* ob,
                 Py_ssize_t w, Py_ssize_t h, Py_ssize_t r) noexcept nogil:
    """Row-wise sums over the clipped window [x-r, x+r] of two w*h arrays."""
    cdef Py_ssize_t x, y, k, m = _imin(r, w - 1)
    cdef double sa, sb
    cdef const double* ra
    cdef const double* rb
    cdef double* qa
    cdef double* qb
    for y in range(h):
        ra = a + y * w
        rb = b + y * w
        qa = oa + y * w
        qb = ob + y * w
        sa = 0.0
        sb = 0.0
        for k in range(m + 1):
            sa += ra[k]
            sb += rb[k]
        for x in range(w):
            qa[x] = sa
            qb[x] = sb
            if x + r + 1 < w:
                sa += ra[x + r + 1]
                sb += rb[x + r + 1]
            if x - r >= 0:
                sa -= ra[x - r]
                sb -= rb[x - r]


cdef void _hsum_u8(const uint8_t* p, Py_ssize_t stride, double* o1, double* o2,
                   Py_ssize_t w, Py_ssize_t h, Py_ssize_t r) noexcept nogil:
    """Row-wise sums of I and I*I over the clipped window (exact integers)."""
    cdef Py_ssize_t x, y, k, m = _imin(r, w - 1)
    cdef int64_t s1, s2, v
    cdef const uint8_t* row
    for y in range(h):
        row = p + y * stride
        s1 = 0
        s2 = 0
        for k in range(m + 1):
            v = row[k]
            s1 += v
            s2 += v * v
        for x in range(w):
            o1[y * w + x] = <double>s1
            o2[y * w + x] = <double>s2
            if x + r + 1 < w:
                v = row[x + r + 1]
                s1 += v
                s2 += v * v
            if x - r >= 0:
                v = row[x - r]
                s1 -= v
                s2 -= v * v


def smooth_edge_preserving(uint8_t[:, :] plane, int radius, int threshold):
    """Edge-preserving smoothing in place: a self-guided filter (He, Sun, Tang 2010).

    With I the plane as float, mean() the mean over the (2r+1)x(2r+1) window clipped
    to the plane (a border pixel averages only the pixels that exist), and
    eps = threshold**2:

        mI = mean(I);  var = max(mean(I*I) - mI**2, 0)
        a = var / (var + eps)   (0 where var + eps == 0);  b = mI - a * mI
        q = mean(a) * I + mean(b);  out = clip(floor(q + 0.5), 0, 255)

    Windows whose standard deviation is well below `threshold` (skin, noise) are
    flattened to their mean; where it is well above (edges, eyes) the pixel is kept.
    Cost is independent of radius (running sums in double). radius 0 is a no-op.
    Tests allow +-1 against a float64 numpy reference (summation order).
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    cdef Py_ssize_t h = plane.shape[0], w = plane.shape[1]
    if h == 0 or w == 0 or radius == 0:
        return
    _check_rows(w, plane.strides[1], "plane")
    cdef Py_ssize_t r = _imin(radius, _imax(w, h))   # a larger window clips to the same
    cdef uint8_t* p0 = &plane[0, 0]
    cdef Py_ssize_t stride = plane.strides[0]
    cdef double eps = <double>threshold * threshold
    cdef Py_ssize_t n = w * h
    cdef double* buf = <double*>malloc((4 * n + 2 * w + w + h) * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef double* h1 = buf
    cdef double* h2 = buf + n
    cdef double* A = buf + 2 * n
    cdef double* B = buf + 3 * n
    cdef double* c1 = buf + 4 * n
    cdef double* c2 = c1 + w
    cdef double* icx = c2 + w
    cdef double* icy = icx + w
    cdef Py_ssize_t x, y, k, mv
    cdef double m1, m2, var, a, inv, q
    cdef const double* ad
    cdef const double* bd
    cdef const double* su
    cdef const double* sv
    cdef uint8_t* row
    with nogil:
        for x in range(w):
            icx[x] = 1.0 / <double>(_imin(x + r, w - 1) - _imax(x - r, 0) + 1)
        for y in range(h):
            icy[y] = 1.0 / <double>(_imin(y + r, h - 1) - _imax(y - r, 0) + 1)
        mv = _imin(r, h - 1)
        # pass 1: window statistics of I -> a, b
        _hsum_u8(p0, stride, h1, h2, w, h, r)
        memset(c1, 0, 2 * w * sizeof(double))
        for k in range(mv + 1):
            for x in range(w):
                c1[x] += h1[k * w + x]
                c2[x] += h2[k * w + x]
        for y in range(h):
            for x in range(w):
                inv = icx[x] * icy[y]
                m1 = c1[x] * inv
                m2 = c2[x] * inv
                var = m2 - m1 * m1
                if var < 0.0:
                    var = 0.0
                a = var / (var + eps) if var + eps > 0.0 else 0.0
                A[y * w + x] = a
                B[y * w + x] = m1 - a * m1
            if y + r + 1 < h:
                ad = h1 + (y + r + 1) * w
                bd = h2 + (y + r + 1) * w
                for x in range(w):
                    c1[x] += ad[x]
                    c2[x] += bd[x]
            if y - r >= 0:
                ad = h1 + (y - r) * w
                bd = h2 + (y - r) * w
                for x in range(w):
                    c1[x] -= ad[x]
                    c2[x] -= bd[x]
        # pass 2: mean(a), mean(b) -> q
        _hsum2(A, B, h1, h2, w, h, r)
        memset(c1, 0, 2 * w * sizeof(double))
        for k in range(mv + 1):
            for x in range(w):
                c1[x] += h1[k * w + x]
                c2[x] += h2[k * w + x]
        for y in range(h):
            row = p0 + y * stride
            for x in range(w):
                inv = icx[x] * icy[y]
                q = c1[x] * inv * row[x] + c2[x] * inv + 0.5
                if q < 0.0:
                    q = 0.0
                elif q > 255.0:
                    q = 255.0
                row[x] = <uint8_t>q
            if y + r + 1 < h:
                su = h1 + (y + r + 1) * w
                sv = h2 + (y + r + 1) * w
                for x in range(w):
                    c1[x] += su[x]
                    c2[x] += sv[x]
            if y - r >= 0:
                su = h1 + (y - r) * w
                sv = h2 + (y - r) * w
                for x in range(w):
                    c1[x] -= su[x]
                    c2[x] -= sv[x]
    free(buf)
