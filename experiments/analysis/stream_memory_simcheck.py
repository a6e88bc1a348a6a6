"""Retrieval check behind stream_memory.md: cosine of the 8 retrieved entries, edges kept per threshold,
fraction of retrieved entries that are the same byte as the query (checkpoint: /tmp/h1runs/hybrid_memory).

    OMP_NUM_THREADS=1 SOSM_DATA_DIR=/work/shared/data python experiments/analysis/stream_memory_simcheck.py
"""
import torch, numpy as np, warnings
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from sosm.train.loading import load_trained
from sosm.train.components import build_splits
from sosm.stream import with_memory
from sosm.model.memory_attention import ModelMemory
tr = load_trained("/tmp/h1runs/hybrid_memory", device="cpu")
ids = build_splits(tr.config.data, tr.tokenizer)[1].val
model = tr.model.eval()
with_memory(model, 8, 0.0)
memory = ModelMemory.for_model(model)
sims = []; same = []; allpairs = []
with torch.no_grad():
    for w in range(300):
        s = w * 64
        x = ids[s:s+64][None]
        record = []
        _, state = model(x, memory=None, stream_offset=s, record_kv=record)
        if w >= 100 and w % 20 == 0:
            res = memory.index.retrieve(state.semantic[0], k=8)
            sims.append(res.similarities.numpy())
            same.append((ids[res.ids] == x[0][:, None]).float().mean().item())
            q = torch.nn.functional.normalize(state.semantic[0], dim=1); pair = (q @ q.T)[~torch.eye(64, dtype=torch.bool)]
            allpairs.append(pair.median().item())
        memory.write(state.semantic[0], [k[0] for k, _ in record], [v[0] for _, v in record], torch.arange(s, s+64))
sims = np.concatenate(sims)
print("windows sampled", len(sims)//64, "memory", len(memory))
for t in (0.0, 0.9, 0.98, 0.99):
    kept = (sims >= t)
    print(t, "mean edges/token", kept.sum(1).mean(), "tokens with >=1 edge", (kept.sum(1) > 0).mean())
print("median top-1 sim", np.median(sims[:,0]), "median 8th", np.median(sims[:,7]))
print("fraction of retrieved entries with the same byte as the query", np.mean(same))
print("median cosine between different tokens of one window", np.median(allpairs))
