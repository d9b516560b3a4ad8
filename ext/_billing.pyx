# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled bill kernel, built as ``billing_core._billing``.

Twin of ``billing_core/_billing_py.py`` — same function, same fen, bit for bit.  The column layout,
the rules and their documents live there and in ``billing_core/rounding.py``; this file only says why
something is done differently in C: one pass over the rows instead of one numpy pass per step, and
cosφ (where the caller did not give the month's) settled exactly with 128-bit integers (P² overflows 64
bits for large customers).  The exact amounts (rows O_N_*) are written only when ``out`` has room for them.
"""

from libc.stdint cimport int64_t, int32_t
from libc.math cimport sqrt, floor

cdef extern from *:
    # a 128-bit integer in C; Cython only needs to know it is an integer type
    """
    typedef __int128 int128_t;
    """
    ctypedef long long int128_t

# params columns and out rows: keep in step with _billing_py.py
DEF P_PRICE_SHARP = 0
DEF P_TIER_KIND = 4
DEF P_LIM2 = 5
DEF P_LIM3 = 6
DEF P_INC2 = 7
DEF P_INC3 = 8
DEF P_FUNDS = 9
DEF P_BASIC_KIND = 10
DEF P_PRICE_KVA = 11
DEF P_PRICE_KW = 12
DEF P_PF_STD = 13

DEF O_SHARP = 0
DEF O_TIER2 = 4
DEF O_TIER3 = 5
DEF O_BASIC = 6
DEF O_PF = 7
DEF O_FUNDS = 8
DEF O_TOTAL = 9
DEF O_PF_X100 = 10
DEF O_PF_BP = 11
DEF O_TIER2_E = 12
DEF O_TIER3_E = 13
DEF O_BILLING_DEMAND = 14
DEF O_N_SHARP = 15
DEF O_N_TIER2 = 19
DEF O_N_TIER3 = 20
DEF O_N_BASIC = 21
DEF O_N_FUNDS = 22

DEF ENERGY_DIV = 1000000
DEF DEMAND_DIV = 100000000
DEF CAPACITY_DIV = 10000
DEF BP_DIV = 10000


cdef inline int64_t _round_div(int64_t num, int64_t den) noexcept nogil:
    # half away from zero, as billing_core.rounding.round_div
    cdef int64_t a = -num if num < 0 else num
    cdef int64_t qq = a // den
    if 2 * (a - qq * den) >= den:
        qq += 1
    return -qq if num < 0 else qq


cdef inline int64_t _clip(int64_t x, int64_t lo, int64_t hi) noexcept nogil:
    # np.clip(x, lo, hi): min(max(x, lo), hi)
    if x < lo:
        x = lo
    if x > hi:
        x = hi
    return x


cdef inline int64_t _pf_x100(int64_t p, int64_t q) noexcept nogil:
    # largest k with (2k-1)^2 (P^2+Q^2) <= 40000 P^2, from a float guess corrected exactly
    if p <= 0:
        return -1
    if q < 0:
        q = -q
    cdef int128_t s2 = <int128_t>p * p + <int128_t>q * q
    cdef int128_t p2 = <int128_t>40000 * p * p
    cdef double x = 100.0 * <double>p / sqrt(<double>p * <double>p + <double>q * <double>q)
    cdef int64_t k = <int64_t>floor(x + 0.5)
    if k > 100:
        k = 100
    if k < 0:
        k = 0
    while k < 100 and <int128_t>(2 * k + 1) * (2 * k + 1) * s2 <= p2:
        k += 1
    while k > 0 and <int128_t>(2 * k - 1) * (2 * k - 1) * s2 > p2:
        k -= 1
    return k


def bill_kernel(const int32_t[::1] tariff_row, const int64_t[::1] e_sharp, const int64_t[::1] e_peak,
                const int64_t[::1] e_flat, const int64_t[::1] e_valley, const int64_t[::1] q,
                const int64_t[::1] pf_x100,
                const int64_t[::1] cum_prev, const int64_t[::1] demand, const int64_t[::1] capacity_kva,
                const int64_t[::1] contract_kw, const int32_t[::1] days, const int32_t[::1] period_days,
                const int64_t[:, ::1] params, const int64_t[:, ::1] pf_table, int64_t[:, ::1] out):
    cdef Py_ssize_t i, n = tariff_row.shape[0]
    cdef int k
    cdef const int64_t* par
    cdef int64_t e[4]
    cdef int64_t total_e, lines, line, lim2, lim3, c0, c1, width, t2, t3, c105, bd, basic, pf, bp, std, kind, num
    cdef bint exact = out.shape[0] > O_N_FUNDS
    with nogil:
        for i in range(n):
            par = &params[tariff_row[i], 0]
            e[0] = e_sharp[i]; e[1] = e_peak[i]; e[2] = e_flat[i]; e[3] = e_valley[i]
            lines = 0
            total_e = 0
            for k in range(4):
                num = e[k] * par[P_PRICE_SHARP + k]
                if exact:
                    out[O_N_SHARP + k, i] = num
                line = _round_div(num, ENERGY_DIV)
                out[O_SHARP + k, i] = line
                lines += line
                total_e += e[k]

            kind = par[P_TIER_KIND]
            if kind == 0:
                t2 = 0
                t3 = 0
            else:
                lim2 = par[P_LIM2]
                lim3 = par[P_LIM3]
                c0 = 0
                if kind == 1:
                    lim2 = _round_div(lim2 * days[i], period_days[i])
                    lim3 = _round_div(lim3 * days[i], period_days[i])
                else:
                    c0 = cum_prev[i]
                c1 = c0 + total_e
                width = lim3 - lim2
                t2 = _clip(c1 - lim2, 0, width) - _clip(c0 - lim2, 0, width)
                t3 = (c1 - lim3 if c1 > lim3 else 0) - (c0 - lim3 if c0 > lim3 else 0)
            out[O_TIER2_E, i] = t2
            out[O_TIER3_E, i] = t3
            if exact:
                out[O_N_TIER2, i] = t2 * par[P_INC2]
                out[O_N_TIER3, i] = t3 * par[P_INC3]
            line = _round_div(t2 * par[P_INC2], ENERGY_DIV)
            out[O_TIER2, i] = line
            lines += line
            line = _round_div(t3 * par[P_INC3], ENERGY_DIV)
            out[O_TIER3, i] = line
            lines += line

            kind = par[P_BASIC_KIND]
            bd = 0
            basic = 0
            num = 0
            if kind == 1:
                bd = capacity_kva[i]
                num = bd * par[P_PRICE_KVA] * days[i]
                basic = _round_div(num, <int64_t>period_days[i] * CAPACITY_DIV)
            elif kind == 2 or kind == 3:
                if kind == 3:
                    bd = demand[i]
                else:
                    c105 = contract_kw[i] * 10500
                    bd = contract_kw[i] * 10000 if demand[i] <= c105 else 2 * demand[i] - c105
                num = bd * par[P_PRICE_KW] * days[i]
                basic = _round_div(num, <int64_t>period_days[i] * DEMAND_DIV)
            if exact:
                out[O_N_BASIC, i] = num
            out[O_BASIC, i] = basic
            out[O_BILLING_DEMAND, i] = bd
            lines += basic

            std = par[P_PF_STD]
            pf = -1
            bp = 0
            if std >= 0:
                pf = pf_x100[i]
                if pf == -2:            # not given: the row is a whole month, cosφ from its own P and Q
                    pf = _pf_x100(total_e, q[i])
                if pf >= 0:
                    bp = pf_table[std, pf]
            out[O_PF_X100, i] = pf
            out[O_PF_BP, i] = bp
            line = _round_div(lines * bp, BP_DIV)
            out[O_PF, i] = line
            if exact:
                out[O_N_FUNDS, i] = total_e * par[P_FUNDS]
            out[O_FUNDS, i] = _round_div(total_e * par[P_FUNDS], ENERGY_DIV)
            out[O_TOTAL, i] = lines + line + out[O_FUNDS, i]
