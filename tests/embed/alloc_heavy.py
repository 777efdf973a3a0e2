"""An allocation-heavy Python workload (tests/embed_preload.rs runs it with
and without emma preloaded and compares the output).

Python's small objects come from its own pymalloc arenas, but everything
above 512 bytes - big strings, bytes, list and dict storage - and
pymalloc's arenas' neighbours come from malloc/realloc/free: with
LD_PRELOAD, from emma.

With the argument `--check-emma` it also asks the preloaded library,
through ctypes, whether blocks Python got from malloc are emma's, and
prints the answer on stderr (the rest of the output must not change).
"""
import ctypes
import hashlib
import json
import random
import sys
import threading
import zlib


def churn(seed):
    rng = random.Random(seed)
    d = {}
    for i in range(60000):
        k = "k%d" % rng.randrange(20000)
        v = d.setdefault(k, [])
        v.append("x" * rng.randrange(1, 900))
        if len(v) > 6:
            del d[k]
    return sum(len(s) for v in d.values() for s in v)


def main():
    out = []
    # Dicts and lists of strings, json round trip, sorting.
    data = {str(i): [i, str(i) * (i % 50), {"n": i}] for i in range(100000)}
    text = json.dumps(data, sort_keys=True)
    back = json.loads(text)
    out.append("json %d %s" % (len(text), hashlib.sha256(text.encode()).hexdigest()[:16]))
    out.append("roundtrip %s" % (back == data))
    keys = sorted(back, key=lambda k: (len(back[k][1]), k))
    out.append("sorted %s %s" % (keys[0], keys[-1]))
    del data, back, keys

    # Growing and shrinking buffers: realloc through every size range.
    buf = bytearray()
    for i in range(2000):
        buf += bytes([i % 251]) * (i * 13 % 7000)
        if len(buf) > 3 << 20:
            del buf[: len(buf) // 2]
    out.append("bytearray %d %08x" % (len(buf), zlib.crc32(buf)))

    # Big blocks: many MiB, compressed and decompressed.
    big = bytes(range(256)) * (64 << 10)  # 16 MiB
    z = zlib.compress(big, 6)
    out.append("zlib %d %s" % (len(z), zlib.decompress(z) == big))

    # Threads allocating and freeing at the same time.
    results = [0] * 4
    def worker(t):
        results[t] = churn(t)
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.append("threads %s" % results)

    print("\n".join(out))

    if "--check-emma" in sys.argv:
        me = ctypes.CDLL(None)
        try:
            owns = me.emma_owns
        except AttributeError:
            print("emma: not preloaded", file=sys.stderr)
            return
        owns.argtypes = [ctypes.c_void_p]
        libc_malloc = me.malloc
        libc_malloc.restype = ctypes.c_void_p
        libc_malloc.argtypes = [ctypes.c_size_t]
        p = libc_malloc(100)
        # id() of an object over 512 bytes is the address of a block
        # PyObject_Malloc got from malloc.
        obj = b"y" * 100000
        stack = ctypes.c_int(0)
        print(
            "emma: owns(malloc(100))=%d owns(id(100 kB bytes))=%d owns(id(big))=%d "
            "owns(stack)=%d mapped=%d"
            % (
                owns(p),
                owns(id(obj)),
                owns(id(big)),
                owns(ctypes.addressof(stack)),
                me.emma_mapped(),
            ),
            file=sys.stderr,
        )


main()
