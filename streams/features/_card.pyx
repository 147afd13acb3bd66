# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=False
"""The card windows' two per-transaction steps, compiled: ``CardWindows.add`` and
``CardWindows.features`` for a transaction that comes after every other one of its card (the
stream's usual case).

``CardWindows`` in ``streams/features/card.py`` is the reference: for anything else (an
out-of-order transaction, a window to rebuild, ratios to pad) these call its methods. Both
compute the same values with the same IEEE double operations in the same order, so the features
and the state are the same bytes either way (``tests/unit/test_card_compiled.py`` checks it on a
simulated stream with late events and compactions). The arrays are read and grown in place
(``cpython.array``); nothing else may hold a buffer of them meanwhile, which the functions check.
"""

from cpython cimport array
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.math cimport exp, log
from libc.string cimport memcmp, memmove

cdef extern from *:
    """
    #define fs_exports(a) (((arrayobject *)(a))->ob_exports)
    #define fs_allocated(a) (((arrayobject *)(a))->allocated)
    #define fs_set_size(a, n) Py_SET_SIZE((PyVarObject *)(a), (n))
    """
    int fs_exports(object a)
    Py_ssize_t fs_allocated(object a)
    void fs_set_size(object a, Py_ssize_t n) noexcept

cdef long long DAY_MS = 86_400_000
cdef long long D1_MS = DAY_MS
cdef long long D3_MS = 3 * DAY_MS
cdef long long D7_MS = 7 * DAY_MS
cdef long long D14_MS = 14 * DAY_MS
cdef long long D30_MS = 30 * DAY_MS
cdef long long HOUR_MS = 3_600_000
cdef double HORIZON_S = D30_MS / 1000.0
cdef double MID = 1.5
cdef double HIGH = 2.0
cdef double TOP = 3.0
cdef enum:
    KEY = 4
# ``card.compromise_logit``'s hypothesis and bounds (see there)
cdef double C_FACTOR = 3.0
cdef double C_SHARE = 0.5
cdef double C_PRIOR = 1e-3
cdef int C_DAYS = 14
cdef Py_ssize_t C_MIN_PAYMENTS = 4
cdef double CV_LO = 0.2
cdef double CV_HI = 2.0
cdef double IQR_PER_SD = 1.349
cdef double EVIDENCE_CAP = 5.0
cdef double EXP_CAP = 50.0
cdef double NO_EVIDENCE = log(C_PRIOR)


ctypedef fused key_t:
    long long  # the entries' times
    float  # the window's amounts


cdef inline Py_ssize_t bisect_right(const key_t* a, key_t x, Py_ssize_t lo,
                                    Py_ssize_t hi) noexcept:
    """``bisect.bisect_right`` over ``a[lo:hi]``."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline Py_ssize_t bisect_left(const float* a, float x, Py_ssize_t lo,
                                   Py_ssize_t hi) noexcept:
    """``bisect.bisect_left`` over ``a[lo:hi]``."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int resize(array.array a, Py_ssize_t n) except -1:
    """Size ``a`` to ``n`` items as CPython's own array does (``array_resize``: the same
    over-allocation), so the state takes the same memory whichever code grew it."""
    cdef Py_ssize_t size = a.ob_size
    if fs_allocated(a) >= n and size < n + 16 and a.data.as_voidptr != NULL:
        fs_set_size(a, n)
        return 0
    array.resize(a, (n >> 4) + (3 if size < 8 else 7) + n)
    fs_set_size(a, n)
    return 0


cdef inline bint typed(array.array a, char code) noexcept:
    return a.ob_descr.typecode == code and fs_exports(a) == 0


cdef inline double cap(double x, double hi) noexcept:
    """Python's ``min(x, hi)``."""
    return hi if hi < x else x


cdef double compromise_logit(const long long* t, const float* rt, Py_ssize_t lo14,
                             Py_ssize_t idx, long long ts_ms, double ratio, const float* w,
                             Py_ssize_t prev, double median) noexcept:
    """``card.compromise_logit``: the same operations in the same order."""
    if prev < C_MIN_PAYMENTS or median <= 0:
        return NO_EVIDENCE
    cdef double cv = (<double>w[(3 * prev) >> 2] - <double>w[prev >> 2]) / (IQR_PER_SD * median)
    if CV_LO > cv:
        cv = CV_LO
    cv = cap(cv, CV_HI)
    cdef double k = 0.5 / (cv * cv)
    cdef double inv_m = 1.0 / C_FACTOR
    cdef double keep = 1.0 - C_SHARE
    cdef double scaled = C_SHARE * inv_m
    cdef double total = 0.0, odds = 0.0, r, d0, d1, x, p, c
    cdef Py_ssize_t j = idx - 1
    cdef long long bound = ts_ms - DAY_MS
    cdef int day
    for day in range(C_DAYS):
        while j >= lo14 and t[j] > bound:
            r = rt[j]
            d0 = r - 1.0
            d1 = r * inv_m - 1.0
            x = k * (d0 * d0 - d1 * d1)
            total += cap(log(keep + scaled * exp(cap(x, EXP_CAP))), EVIDENCE_CAP)
            j -= 1
        odds += exp(cap(total, EXP_CAP))
        bound -= DAY_MS
    p = C_PRIOR * odds
    c = p / (1.0 + p)
    d0 = ratio - 1.0
    d1 = ratio * inv_m - 1.0
    x = cap(k * (d0 * d0 - d1 * d1), EXP_CAP)
    return log(c * scaled) + x - log(1.0 - c * C_SHARE)


def add(state, long long ts_ms, double amount, bytes terminal):
    """``CardWindows.add``: its index. One at or after the card's latest transaction is
    appended here, an earlier one inserted by ``state.add``."""
    cdef array.array ts = state.ts
    cdef array.array cum = state.cum
    cdef array.array amounts = state.amounts
    cdef Py_ssize_t n = ts.ob_size
    if not (typed(ts, c'q') and typed(cum, c'd') and typed(amounts, c'f')):
        return state.add(ts_ms, amount, terminal)
    if n and ts_ms < ts.data.as_longlongs[n - 1]:
        return state.add(ts_ms, amount, terminal)
    if cum.ob_size != n + 1 or amounts.ob_size != n:
        return state.add(ts_ms, amount, terminal)
    resize(ts, n + 1)
    ts.data.as_longlongs[n] = ts_ms
    resize(cum, n + 2)
    cum.data.as_doubles[n + 1] = cum.data.as_doubles[n] + amount
    resize(amounts, n + 1)
    amounts.data.as_floats[n] = <float>amount
    state.terms += terminal
    return n


def features(state, Py_ssize_t idx, long long ts_ms, double amount, bytes terminal,
             list out):
    """``CardWindows.features``: computed here when the card's previous transaction left its
    window just before this one (``whi == idx``) and this entry is the latest (its ratio comes
    next); by ``state.features`` otherwise, before anything is changed."""
    cdef array.array ts = state.ts
    cdef array.array cum = state.cum
    cdef array.array amounts = state.amounts
    cdef array.array ratios = state.ratios
    cdef array.array levels = state.levels
    cdef array.array window = state.window
    cdef Py_ssize_t wlo = state.wlo, whi = state.whi, mpos = state.mpos
    terms_obj = state.terms
    if len(terminal) != KEY or type(terms_obj) is not bytearray:
        return state.features(idx, ts_ms, amount, terminal, out)
    if PyByteArray_GET_SIZE(terms_obj) < idx * KEY:
        return state.features(idx, ts_ms, amount, terminal, out)
    if not (typed(ts, c'q') and typed(cum, c'd') and typed(amounts, c'f')
            and typed(ratios, c'f') and typed(levels, c'i') and typed(window, c'f')):
        return state.features(idx, ts_ms, amount, terminal, out)
    if (whi != idx or ratios.ob_size != idx or levels.ob_size != 3 * (idx + 1)
            or ts.ob_size <= idx or amounts.ob_size <= idx or cum.ob_size <= idx + 1
            or wlo < 0 or window.ob_size != idx - wlo):
        return state.features(idx, ts_ms, amount, terminal, out)
    cdef const long long* t = ts.data.as_longlongs
    cdef const double* c = cum.data.as_doubles
    cdef const float* am = amounts.data.as_floats
    cdef Py_ssize_t hi = idx + 1
    cdef Py_ssize_t lo30 = bisect_right(t, ts_ms - D30_MS, 0, hi)
    if wlo > lo30:
        return state.features(idx, ts_ms, amount, terminal, out)
    cdef Py_ssize_t lo7 = bisect_right(t, ts_ms - D7_MS, lo30, hi)
    cdef Py_ssize_t lo1 = bisect_right(t, ts_ms - D1_MS, lo7, hi)
    cdef double top = c[hi]
    cdef Py_ssize_t n1 = hi - lo1, n7 = hi - lo7, n30 = hi - lo30
    cdef Py_ssize_t prev = idx - lo30
    cdef Py_ssize_t j, pos, size, half, lo14, lo3, a, b, k
    cdef float* w
    cdef const float* rt
    cdef const int* lv
    cdef double median, ratio, top_ratio, r, v, compromise
    cdef double mid, high, top14, mid3, high3, top3
    cdef float stored
    # slide the sorted window: the entries that left the 30 days out
    size = window.ob_size
    w = window.data.as_floats
    for j in range(wlo, lo30):
        pos = bisect_left(w, am[j], 0, size)
        memmove(w + pos, w + pos + 1, (size - pos - 1) * sizeof(float))
        size -= 1
        resize(window, size)  # one item at a time, as ``del window[pos]``
        w = window.data.as_floats
    rt = ratios.data.as_floats
    lv = levels.data.as_ints
    if prev:
        half = prev >> 1
        if prev & 1:
            median = w[half]
        else:
            median = (<double>w[half - 1] + <double>w[half]) * 0.5
        ratio = amount / median if median > 0 else 1.0
        lo14 = bisect_right(t, ts_ms - D14_MS, lo30, idx)
        lo3 = bisect_right(t, ts_ms - D3_MS, lo14, idx)
        a, b, k = 3 * idx, 3 * lo14, 3 * lo3
        mid = <double>(lv[a] - lv[b])
        high = <double>(lv[a + 1] - lv[b + 1])
        top14 = <double>(lv[a + 2] - lv[b + 2])
        mid3 = <double>(lv[a] - lv[k])
        high3 = <double>(lv[a + 1] - lv[k + 1])
        top3 = <double>(lv[a + 2] - lv[k + 2])
        if lo14 >= idx:
            top_ratio = 0.0
            mpos = -1
        elif 0 < whi <= idx + 1 and mpos >= lo14:  # still in: extend the window
            top_ratio = rt[mpos]
            for j in range(whi - 1, idx):
                if rt[j] >= top_ratio:
                    top_ratio = rt[j]
                    mpos = j
        else:
            top_ratio = rt[lo14]
            mpos = lo14
            for j in range(lo14 + 1, idx):
                if rt[j] > top_ratio:
                    top_ratio = rt[j]
                    mpos = j
        compromise = compromise_logit(t, rt, lo14, idx, ts_ms, ratio, w, prev, median)
    else:
        ratio, top_ratio, mpos = 1.0, 0.0, -1
        mid = high = top14 = mid3 = high3 = top3 = 0.0
        compromise = NO_EVIDENCE
    # the entry's amount into the window (after equal ones, as ``insort``)
    v = am[idx]
    pos = bisect_right(w, <float>v, 0, size)
    resize(window, size + 1)
    w = window.data.as_floats
    memmove(w + pos + 1, w + pos, (size - pos) * sizeof(float))
    w[pos] = <float>v
    # this entry's ratio (float32, as stored) and prefix counts
    stored = <float>ratio
    r = stored
    resize(ratios, idx + 1)
    ratios.data.as_floats[idx] = stored
    for j in range(3 * idx + 4, 3 * idx + 7):  # one item at a time, as three ``append``s
        resize(levels, j)
    cdef int* lw = levels.data.as_ints
    a = 3 * idx
    lw[a + 3] = lw[a] + (r >= MID)
    lw[a + 4] = lw[a + 1] + (r >= HIGH)
    lw[a + 5] = lw[a + 2] + (r >= TOP)
    state.wlo = lo30
    state.whi = idx + 1
    state.mpos = mpos
    # the terminal among the entries [lo30, idx): keys only ever match at an entry's start
    cdef const char* terms = PyByteArray_AS_STRING(terms_obj)
    cdef const char* key = terminal
    cdef double new_terminal = 1.0
    for j in range(lo30, idx):
        if memcmp(terms + j * KEY, key, KEY) == 0:
            new_terminal = 0.0
            break
    out.extend((
        <double>n1,
        (top - c[lo1]) / n1,
        <double>n7,
        (top - c[lo7]) / n7,
        <double>n30,
        (top - c[lo30]) / n30,
        amount / ((c[idx] - c[lo30]) / prev) if prev and c[idx] > c[lo30] else 1.0,
        (ts_ms - t[idx - 1]) / 1000.0 if idx > lo30 else HORIZON_S,
        <double>(hi - bisect_right(t, ts_ms - HOUR_MS, lo1, hi)),
        new_terminal,
        ratio,
        high,
        top_ratio,
        mid,
        top14,
        mid3,
        high3,
        top3,
        compromise,
    ))
    return None
