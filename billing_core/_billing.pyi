# Stub for the compiled module built from ext/_billing.pyx; C types noted beside each argument.
import numpy as np
def bill_kernel(tariff_row: np.ndarray,   # const int32_t[::1]
                e_sharp: np.ndarray, e_peak: np.ndarray, e_flat: np.ndarray, e_valley: np.ndarray,  # const int64_t[::1]
                q: np.ndarray, pf_x100: np.ndarray, cum_prev: np.ndarray, demand: np.ndarray,          # const int64_t[::1]
                capacity_kva: np.ndarray, contract_kw: np.ndarray,                # const int64_t[::1]
                days: np.ndarray, period_days: np.ndarray,                        # const int32_t[::1]
                params: np.ndarray,       # const int64_t[:, ::1]  (R, N_PARAMS)
                pf_table: np.ndarray,     # const int64_t[:, ::1]  (3, 101)
                out: np.ndarray,          # int64_t[:, ::1]        (N_OUT, N), filled (N_ROUNDED rows, or N_OUT with the exact amounts); nogil loop, int128 cosφ
                ) -> None: ...
