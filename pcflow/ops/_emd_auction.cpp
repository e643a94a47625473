// Approximate Earth Mover's assignment by Bertsekas' auction with epsilon-scaling, on CPU.
//
// Plain C ABI (loaded with ctypes by pcflow/ops/assignment.py through pcflow/_native.py): raw
// pointers, sizes and a thread count; an int status and a message in a caller-given buffer.
//
// Every pair of point sets is solved by one thread, start to end, in a fixed order, and the
// floating-point operations that decide the matching (one rounding each: a sum of squares, a
// square root, a sum of a cost and a price, comparisons) are not contracted into fused
// multiply-adds, so the matching is the same for any thread count and any instruction set.

#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// Lanes of one vector register of floats for the instruction set this file is compiled for.
// The matching does not depend on it: every lane computes the same correctly rounded values,
// and ties are broken by the lowest index.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float FloatVec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

enum Status : int { kOk = 0, kBadInput = 1, kNotConverged = 2, kOutOfMemory = 3 };

void write_error(char* error, int64_t size, const char* message) {
    if (error != nullptr && size > 0) {
        std::snprintf(error, static_cast<size_t>(size), "%s", message);
    }
}

struct Options {
    double tol;
    double eps_scaling;
    int64_t max_phases;
    int64_t max_bids_per_point;
};

struct PairResult {
    int status = kOk;
    double gap = 0.0;
    char message[256] = {0};
};

// Two accumulators of kLanes each hide the latency of the compare-and-blend chain.
constexpr int64_t kBlock = 2 * kLanes;

__attribute__((always_inline)) inline FloatVec load(const float* data) {
    FloatVec vector;
    std::memcpy(&vector, data, sizeof(FloatVec));
    return vector;
}

struct Candidates {
    FloatVec best1, best2;
    IntVec index1;
};

inline void start(Candidates* candidates, int offset) {
    const float inf = std::numeric_limits<float>::infinity();
    int32_t lanes[kLanes];
    for (int l = 0; l < kLanes; ++l) lanes[l] = offset + l;
    candidates->best1 = FloatVec{} + inf;
    candidates->best2 = FloatVec{} + inf;
    std::memcpy(&candidates->index1, lanes, sizeof(IntVec));
}

__attribute__((always_inline)) inline void update(Candidates* candidates, FloatVec value,
                                                  IntVec index) {
    IntVec smaller = value < candidates->best1;
    candidates->best2 =
        smaller ? candidates->best1 : (value < candidates->best2 ? value : candidates->best2);
    candidates->index1 = smaller ? index : candidates->index1;
    candidates->best1 = smaller ? value : candidates->best1;
}

// Best and second-best value of cost[j] + price[j] over one padded row (padding costs +inf).
// Also a shortlist for later bids: the object holding each lane's minimum, and the smallest
// second-best value of any lane, below which no other object lies.
inline void best_two(const float* cost, const float* price, int64_t stride, int32_t* best_index,
                     float* best, float* second, int32_t* shortlist, float* threshold) {
    Candidates even, odd;
    start(&even, 0);
    start(&odd, kLanes);
    IntVec index_even = even.index1, index_odd = odd.index1;
    for (int64_t j = 0; j < stride; j += kBlock) {
        update(&even, load(cost + j) + load(price + j), index_even);
        update(&odd, load(cost + j + kLanes) + load(price + j + kLanes), index_odd);
        index_even += kBlock;
        index_odd += kBlock;
    }
    // The lowest index among the lanes holding the minimum wins: a tie is broken the same way
    // whatever the vector width the compiler chose.
    float best1[kBlock], best2[kBlock];
    int32_t index1[kBlock];
    for (int l = 0; l < kLanes; ++l) {
        best1[l] = even.best1[l];
        best2[l] = even.best2[l];
        index1[l] = even.index1[l];
        best1[kLanes + l] = odd.best1[l];
        best2[kLanes + l] = odd.best2[l];
        index1[kLanes + l] = odd.index1[l];
    }
    int winner = 0;
    for (int l = 1; l < kBlock; ++l) {
        if (best1[l] < best1[winner] || (best1[l] == best1[winner] && index1[l] < index1[winner])) {
            winner = l;
        }
    }
    float runner_up = best2[winner];
    float floor = best2[0];
    for (int l = 0; l < kBlock; ++l) {
        if (l != winner && best1[l] < runner_up) runner_up = best1[l];
        floor = std::min(floor, best2[l]);
        shortlist[l] = index1[l];
    }
    *best_index = index1[winner];
    *best = best1[winner];
    *second = runner_up;
    *threshold = floor;
}

// The bid of one person: best object and the best and second-best values. Prices only rise,
// so an object off the person's shortlist still costs at least the shortlist's threshold; when
// the two best of the shortlist are below it, they are the row's two best (ties broken by the
// lowest index, as the full scan does) and the scan of the whole row is skipped.
inline void find_bid(const float* row, const float* price, int64_t stride, int32_t* shortlist,
                     float* threshold, int32_t* best_index, float* best, float* second) {
    float value1 = std::numeric_limits<float>::infinity(), value2 = value1;
    int32_t index = -1;
    for (int l = 0; l < kBlock; ++l) {
        const int32_t object = shortlist[l];
        const float value = row[object] + price[object];
        if (value < value1 || (value == value1 && object < index)) {
            value2 = value1;
            value1 = value;
            index = object;
        } else if (value < value2) {
            value2 = value;
        }
    }
    if (value2 < *threshold) {
        *best_index = index;
        *best = value1;
        *second = value2;
        return;
    }
    best_two(row, price, stride, best_index, best, second, shortlist, threshold);
}

// Smallest value of cost[j] + price[j] over one padded row.
inline float row_minimum(const float* cost, const float* price, int64_t stride) {
    FloatVec even = load(cost) + load(price), odd = load(cost + kLanes) + load(price + kLanes);
    for (int64_t j = kBlock; j < stride; j += kBlock) {
        FloatVec a = load(cost + j) + load(price + j);
        FloatVec b = load(cost + j + kLanes) + load(price + j + kLanes);
        even = a < even ? a : even;
        odd = b < odd ? b : odd;
    }
    even = odd < even ? odd : even;
    float smallest = even[0];
    for (int l = 1; l < kLanes; ++l) smallest = std::min(smallest, even[l]);
    return smallest;
}

// Solves one pair of n-point sets; writes permutation[0:n] (x's point i -> y's point).
void solve_pair(const double* x, const double* y, int64_t n, int64_t dim, const Options& options,
                int64_t* permutation, PairResult* result) {
    if (n == 0) {
        result->gap = 0.0;
        return;
    }
    const int64_t stride = (n + kBlock - 1) / kBlock * kBlock;
    // Centre on y's mean and scale by a power of two so that the largest coordinate is below 1:
    // the optimal matching does not change, and no cost can overflow or vanish in float32
    // whatever finite coordinates come in.
    std::vector<double> centre(dim, 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < dim; ++d) centre[d] += y[i * dim + d] / static_cast<double>(n);
    double largest = 0.0;
    for (int64_t i = 0; i < n * dim; ++i) {
        largest = std::max(largest, std::fabs(x[i] - centre[i % dim]));
        largest = std::max(largest, std::fabs(y[i] - centre[i % dim]));
    }
    if (!std::isfinite(largest)) {
        result->status = kBadInput;
        std::snprintf(result->message, sizeof(result->message),
                      "coordinates are not finite or their spread overflows float64");
        return;
    }
    int exponent = 0;
    if (largest > 0.0) std::frexp(largest, &exponent);
    const double scale = std::ldexp(1.0, -exponent);
    // x row-major, y dimension-major: the inner loop of the cost matrix reads y contiguously.
    std::vector<float> xs(n * dim), ys(dim * n);
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t d = 0; d < dim; ++d) {
            xs[i * dim + d] = static_cast<float>((x[i * dim + d] - centre[d]) * scale);
            ys[d * n + i] = static_cast<float>((y[i * dim + d] - centre[d]) * scale);
        }
    }

    std::vector<float> cost(static_cast<size_t>(n) * static_cast<size_t>(stride),
                            std::numeric_limits<float>::infinity());
    std::vector<float> zero(stride, 0.0f);
    float largest_cost = 0.0f;
    double nearest_bound = 0.0;  // the sum of nearest distances: a bound that needs no prices
    for (int64_t i = 0; i < n; ++i) {
        float* row = cost.data() + i * stride;
        std::fill(row, row + n, 0.0f);
        for (int64_t d = 0; d < dim; ++d) {
            const float xi = xs[i * dim + d];
            const float* yd = ys.data() + d * n;
            for (int64_t j = 0; j < n; ++j) {
                const float difference = xi - yd[j];
                row[j] = row[j] + difference * difference;
            }
        }
        for (int64_t j = 0; j < n; ++j) row[j] = std::sqrt(row[j]);
        FloatVec top = {};
        for (int64_t j = 0; j < stride; j += kLanes) {
            FloatVec value = load(row + j);
            FloatVec finite = value < std::numeric_limits<float>::infinity() ? value : 0.0f;
            top = finite > top ? finite : top;
        }
        for (int l = 0; l < kLanes; ++l) largest_cost = std::max(largest_cost, top[l]);
        nearest_bound += row_minimum(row, zero.data(), stride);
    }

    std::vector<float> price(stride, 0.0f), column(n);
    // No shortlist yet: a threshold of -inf sends the first bid of everyone to a full scan.
    std::vector<int32_t> shortlist(static_cast<size_t>(n) * kBlock, 0);
    std::vector<float> threshold(n, -std::numeric_limits<float>::infinity());
    std::vector<int32_t> person_to_object(n, -1), object_to_person(n, -1), queue;
    queue.reserve(n);
    const float resolution = 8.0f * std::numeric_limits<float>::epsilon();
    // The first increment: a sixteenth of the largest cost (measured: fewer bids in all than a
    // quarter or a sixty-fourth, on spheres, airplanes and lamps of 2,048 points).
    float eps = std::max(largest_cost, std::numeric_limits<float>::min()) / 16.0f;
    double gap = std::numeric_limits<double>::infinity();
    for (int32_t i = 0; i < n; ++i) queue.push_back(static_cast<int32_t>(n - 1 - i));

    for (int64_t phase = 0; phase < options.max_phases; ++phase) {
        float highest_price = 0.0f;
        for (int64_t j = 0; j < n; ++j) highest_price = std::max(highest_price, price[j]);
        // An increment below the prices' resolution would be lost, and two persons could then
        // outbid each other forever at a constant price.
        eps = std::max(eps, resolution * (largest_cost + highest_price));
        const int64_t max_bids = options.max_bids_per_point * n;
        int64_t bids = 0;
        while (!queue.empty()) {
            if (++bids > max_bids) {
                result->status = kNotConverged;
                std::snprintf(result->message, sizeof(result->message),
                              "the auction did not converge: phase %lld exceeded %lld bids "
                              "(max_bids_per_point=%lld) at increment %g",
                              static_cast<long long>(phase), static_cast<long long>(max_bids),
                              static_cast<long long>(options.max_bids_per_point),
                              static_cast<double>(eps));
                return;
            }
            const int32_t person = queue.back();
            queue.pop_back();
            int32_t object;
            float best, second;
            find_bid(cost.data() + person * stride, price.data(), stride,
                     shortlist.data() + person * kBlock, threshold.data() + person, &object,
                     &best, &second);
            if (!std::isfinite(second)) second = best;  // n = 1
            price[object] = price[object] + ((second - best) + eps);
            const int32_t previous = object_to_person[object];
            object_to_person[object] = person;
            person_to_object[person] = object;
            if (previous >= 0) {
                person_to_object[previous] = -1;
                queue.push_back(previous);
            }
        }
        // Certified gap: the matching's cost against a dual bound. With u_i the row minima of
        // cost + price, the tightest column potentials v_j = min_i (cost_ij - u_i) keep
        // u_i + v_j <= cost_ij, so sum u + sum v <= optimum; it is at least the prices' own
        // bound (v_j = -price_j) and often much closer.
        double primal = 0.0, row_sum = 0.0, column_sum = 0.0;
        std::vector<float> row_best(n);
        std::fill(column.begin(), column.end(), std::numeric_limits<float>::infinity());
        for (int64_t i = 0; i < n; ++i) {
            const float* row = cost.data() + i * stride;
            const float smallest = row_minimum(row, price.data(), stride);
            row_best[i] = smallest;
            row_sum += smallest;
            primal += row[person_to_object[i]];
            for (int64_t j = 0; j < n; ++j) {
                const float reduced = row[j] - smallest;
                column[j] = reduced < column[j] ? reduced : column[j];
            }
        }
        for (int64_t j = 0; j < n; ++j) column_sum += column[j];
        const double bound = std::max(row_sum + column_sum, nearest_bound);
        gap = primal <= 0.0 ? 0.0
                            : std::max(primal - bound, 0.0) /
                                  std::max(bound, static_cast<double>(
                                                      std::numeric_limits<float>::min()));
        // Out of phases, the matching is kept with its (larger) certified gap.
        if (gap <= options.tol || phase + 1 == options.max_phases) break;
        // The gap shrinks about in proportion to eps: near the target, a smaller step than
        // eps_scaling reaches it with a cheaper last phase.
        const double step =
            std::max(1.0 / options.eps_scaling, std::min(0.5, 0.7 * options.tol / gap));
        eps = static_cast<float>(eps * step);
        // Only the persons that violate the tighter slackness bid again.
        for (int64_t i = n - 1; i >= 0; --i) {
            const int32_t object = person_to_object[i];
            const float* row = cost.data() + i * stride;
            if (row[object] + price[object] > row_best[i] + eps) {
                object_to_person[object] = -1;
                person_to_object[i] = -1;
                queue.push_back(static_cast<int32_t>(i));
            }
        }
    }
    for (int64_t i = 0; i < n; ++i) permutation[i] = person_to_object[i];
    result->gap = gap;
}

}  // namespace

extern "C" {

// The version of this ABI; the Python side checks it.
__attribute__((visibility("default"))) int pcflow_emd_auction_version() { return 1; }

// Approximate optimal assignment of x[b, :lengths[b]] to y[b, :lengths[b]] for every b.
//
// x, y: (batch, num_points, dim) float64, C-contiguous. lengths: (batch,) int64 in
// [0, num_points], or null for all num_points. permutation: (batch, num_points) int64 output,
// x's point i matched to y's point permutation[b, i]; padded entries get their own index.
// gap: (batch,) float64 output, certified relative excess over the optimum. Returns 0 on
// success, 1 for bad input, 2 when a pair did not converge within the caps, 3 out of memory;
// then error holds a message (at most error_size bytes, NUL-terminated).
__attribute__((visibility("default"))) int pcflow_emd_auction(
    const double* x, const double* y, int64_t batch, int64_t num_points, int64_t dim,
    const int64_t* lengths, double tol, double eps_scaling, int64_t max_phases,
    int64_t max_bids_per_point, int64_t num_threads, int64_t* permutation, double* gap,
    char* error, int64_t error_size) {
    char message[512];
    if (x == nullptr || y == nullptr || permutation == nullptr || gap == nullptr) {
        write_error(error, error_size, "x, y, permutation and gap must not be null pointers");
        return kBadInput;
    }
    if (batch < 0 || num_points < 0 || dim < 1 || num_points > (int64_t{1} << 30)) {
        std::snprintf(message, sizeof(message),
                      "need batch >= 0, 0 <= num_points <= 2**30 and dim >= 1, got batch=%lld, "
                      "num_points=%lld, dim=%lld",
                      static_cast<long long>(batch), static_cast<long long>(num_points),
                      static_cast<long long>(dim));
        write_error(error, error_size, message);
        return kBadInput;
    }
    if (!(tol > 0.0) || !(eps_scaling > 1.0) || max_phases < 1 || max_bids_per_point < 1 ||
        num_threads < 1) {
        std::snprintf(message, sizeof(message),
                      "need tol > 0, eps_scaling > 1, max_phases >= 1, max_bids_per_point >= 1 "
                      "and num_threads >= 1, got %g, %g, %lld, %lld, %lld",
                      tol, eps_scaling, static_cast<long long>(max_phases),
                      static_cast<long long>(max_bids_per_point),
                      static_cast<long long>(num_threads));
        write_error(error, error_size, message);
        return kBadInput;
    }
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t length = lengths == nullptr ? num_points : lengths[b];
        if (length < 0 || length > num_points) {
            std::snprintf(message, sizeof(message),
                          "lengths[%lld] = %lld is outside [0, %lld]", static_cast<long long>(b),
                          static_cast<long long>(length), static_cast<long long>(num_points));
            write_error(error, error_size, message);
            return kBadInput;
        }
    }
    for (int64_t i = 0; i < batch * num_points * dim; ++i) {
        if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
            std::snprintf(message, sizeof(message),
                          "x and y must be finite; element %lld of the flattened arrays is not",
                          static_cast<long long>(i));
            write_error(error, error_size, message);
            return kBadInput;
        }
    }
    const Options options{tol, eps_scaling, max_phases, max_bids_per_point};
    std::vector<PairResult> results(static_cast<size_t>(batch));
    std::atomic<int64_t> next{0};
    auto work = [&]() {
        for (int64_t b = next++; b < batch; b = next++) {
            const int64_t length = lengths == nullptr ? num_points : lengths[b];
            const int64_t offset = b * num_points * dim;
            int64_t* out = permutation + b * num_points;
            for (int64_t i = length; i < num_points; ++i) out[i] = i;
            try {
                solve_pair(x + offset, y + offset, length, dim, options, out, &results[b]);
            } catch (const std::exception& exception) {
                results[b].status = kOutOfMemory;
                std::snprintf(results[b].message, sizeof(results[b].message), "%s",
                              exception.what());
            }
            gap[b] = results[b].gap;
        }
    };
    const int64_t threads = std::min<int64_t>(num_threads, std::max<int64_t>(batch, 1));
    if (threads <= 1) {
        work();
    } else {
        std::vector<std::thread> pool;
        try {
            for (int64_t t = 0; t < threads; ++t) pool.emplace_back(work);
        } catch (const std::exception&) {
            // Fewer threads than asked for: the ones running (and this one) finish the work.
        }
        work();
        for (auto& thread : pool) thread.join();
    }
    for (int64_t b = 0; b < batch; ++b) {
        if (results[b].status != kOk) {
            std::snprintf(message, sizeof(message), "pair %lld: %s", static_cast<long long>(b),
                          results[b].message);
            write_error(error, error_size, message);
            return results[b].status;
        }
    }
    return kOk;
}

}  // extern "C"
