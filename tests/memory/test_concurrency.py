"""One writer and three readers on one HNSWMemory: no errors, no lost or duplicated ids."""
import threading

import torch

from sosm.memory import HNSWMemory


def test_concurrent_add_and_retrieve():
    memory = HNSWMemory(dim=16, max_elements=32)  # forces several resizes under load
    memory.add(torch.randn(10, 16))
    errors, issued, done = [], [], threading.Event()

    def writer():
        try:
            for step in range(60):
                issued.extend(memory.add(torch.randn(7, 16), positions=torch.full((7,), step)).tolist())
                if step % 10 == 0:
                    memory.delete([step])
        except Exception as err:  # collected and re-raised in the main thread
            errors.append(err)
        finally:
            done.set()

    def reader(seed):
        g = torch.Generator().manual_seed(seed)
        try:
            while not done.is_set():
                n = memory.count
                result = memory.retrieve(torch.randn(3, 16, generator=g), k=5, max_position=torch.tensor([5, 30, 100]))
                assert (result.ids < memory.count).all() and result.ids.shape == (3, 5)
                assert ((result.positions < torch.tensor([[5], [30], [100]])) | (result.ids < 0)).all()
                memory.retrieve(torch.randn(2, 16, generator=g), k=3)
                assert memory.count >= n
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert issued == list(range(10, 10 + 60 * 7))
    assert memory.count == 430 and len(memory) == 430 - 6
    live = set(range(430)) - {0, 10, 20, 30, 40, 50}
    got = memory.retrieve(memory.get_states(torch.tensor(sorted(live))), k=1).ids[:, 0]
    assert (got >= 0).all()
