/* Native CPU landmark BFS for sosm.graph.landmarks.landmark_distances (compiled on first use).
 *
 * Level-synchronous bit-parallel multi-source BFS: every node carries ceil(L/64) uint64 words
 * of visited and frontier bits (bit l for landmark slot l; samples share no edges, so one bit
 * serves every sample). A level pushes each frontier node's bits along its out-edges (CSR by
 * source, built here from the raw edge list with the same filter as _token_edges):
 * new = frontier[u] & ~visited[v]; newly set bits get distance = level. Stops when no bit is
 * new or at max_distance. Same numbers as the torch path: hop distances, UNREACHABLE elsewhere.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SOSM_LANDMARKS_ABI 1
#define UNREACHABLE_HOPS 32767

int sosm_landmarks_abi(void) { return SOSM_LANDMARKS_ABI; }

static int keep_edge(int64_t s, int64_t d, int64_t n, int64_t t, int one_sample, int causal) {
    if (s < 0 || d < 0 || s >= n || d >= n) return 0;
    if (!one_sample && s / t != d / t) return 0;
    return causal ? s < d : s != d; /* same sample: s % t < d % t <=> s < d */
}

/* Returns 0 on success, 1 when a buffer could not be allocated, 2 when N does not fit int32. */
int sosm_landmark_bfs(int64_t n_edges, const int64_t *src, const int64_t *dst, int64_t edge_stride,
                      int64_t batch, int64_t seq_len, int causal, int64_t n_marks, const int64_t *marks,
                      int64_t max_distance, int16_t *dist) {
    const int64_t n = batch * seq_len, L = n_marks, W = (n_marks + 63) / 64;
    const int one = batch == 1;
    if (n >= INT32_MAX) return 2;
    for (int64_t i = 0; i < n * L; ++i) dist[i] = UNREACHABLE_HOPS;
    if (L == 0) return 0;

    int64_t *start = calloc((size_t)n + 1, sizeof(int64_t));
    if (!start) return 1;
    for (int64_t e = 0; e < n_edges; ++e) {
        int64_t s = src[e * edge_stride], d = dst[e * edge_stride];
        if (!keep_edge(s, d, n, seq_len, one, causal)) continue;
        start[s + 1]++;
        if (!causal) start[d + 1]++;
    }
    for (int64_t v = 0; v < n; ++v) start[v + 1] += start[v];
    int32_t *adj = malloc((size_t)(start[n] > 0 ? start[n] : 1) * sizeof(int32_t));
    int64_t *fill = malloc((size_t)n * sizeof(int64_t));
    uint64_t *visited = calloc((size_t)(n * W), sizeof(uint64_t));
    uint64_t *front = calloc((size_t)(n * W), sizeof(uint64_t));
    uint64_t *next = calloc((size_t)(n * W), sizeof(uint64_t));
    int32_t *cur_list = malloc((size_t)n * sizeof(int32_t));
    int32_t *next_list = malloc((size_t)n * sizeof(int32_t));
    int rc = 0;
    if (!adj || !fill || !visited || !front || !next || !cur_list || !next_list) { rc = 1; goto done; }
    memcpy(fill, start, (size_t)n * sizeof(int64_t));
    for (int64_t e = 0; e < n_edges; ++e) {
        int64_t s = src[e * edge_stride], d = dst[e * edge_stride];
        if (!keep_edge(s, d, n, seq_len, one, causal)) continue;
        adj[fill[s]++] = (int32_t)d;
        if (!causal) adj[fill[d]++] = (int32_t)s;
    }

    int64_t cur_n = 0;
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t l = 0; l < L; ++l) {
            int64_t v = b * seq_len + marks[b * L + l];
            uint64_t *fv = front + v * W;
            int empty = 1;
            for (int64_t w = 0; w < W; ++w) empty &= fv[w] == 0;
            if (empty) cur_list[cur_n++] = (int32_t)v;
            fv[l >> 6] |= (uint64_t)1 << (l & 63);
            visited[v * W + (l >> 6)] |= (uint64_t)1 << (l & 63);
            dist[v * L + l] = 0;
        }

    for (int64_t level = 1; level <= max_distance && cur_n > 0; ++level) {
        int64_t next_n = 0;
        if (W == 1) {
            for (int64_t i = 0; i < cur_n; ++i) {
                int64_t u = cur_list[i];
                uint64_t fu = front[u];
                for (int64_t e = start[u]; e < start[u + 1]; ++e) {
                    int32_t v = adj[e];
                    uint64_t c = fu & ~visited[v];
                    if (c) {
                        if (!next[v]) next_list[next_n++] = v;
                        next[v] |= c;
                        visited[v] |= c;
                    }
                }
                front[u] = 0;
            }
        } else {
            for (int64_t i = 0; i < cur_n; ++i) {
                int64_t u = cur_list[i];
                uint64_t *fu = front + u * W;
                for (int64_t e = start[u]; e < start[u + 1]; ++e) {
                    int64_t v = adj[e];
                    uint64_t *vv = visited + v * W, *nv = next + v * W;
                    uint64_t any = 0, was = 0;
                    for (int64_t w = 0; w < W; ++w) any |= fu[w] & ~vv[w];
                    if (!any) continue;
                    for (int64_t w = 0; w < W; ++w) was |= nv[w];
                    if (!was) next_list[next_n++] = (int32_t)v;
                    for (int64_t w = 0; w < W; ++w) {
                        uint64_t c = fu[w] & ~vv[w];
                        nv[w] |= c;
                        vv[w] |= c;
                    }
                }
                for (int64_t w = 0; w < W; ++w) fu[w] = 0;
            }
        }
        for (int64_t i = 0; i < next_n; ++i) { /* next[v] holds exactly the bits new at this level */
            int64_t v = next_list[i];
            int16_t *row = dist + v * L;
            for (int64_t w = 0; w < W; ++w) {
                uint64_t c = next[v * W + w];
                while (c) {
                    row[w * 64 + __builtin_ctzll(c)] = (int16_t)level;
                    c &= c - 1;
                }
            }
        }
        uint64_t *tb = front; front = next; next = tb; /* next is all zero again: front was cleared */
        int32_t *tl = cur_list; cur_list = next_list; next_list = tl;
        cur_n = next_n;
    }
done:
    free(start); free(adj); free(fill); free(visited); free(front); free(next); free(cur_list); free(next_list);
    return rc;
}
