# SPDX-License-Identifier: MIT
"""asyncio: get_async/put_async never block the event loop, and a cancelled
get_async stops waiting at once (nothing stays parked in the store)."""
import asyncio
import math
import os

import pytest

import sealstore
import sshelpers

MiB = 1 << 20


def parked(client):
    return client.stats()["parked_requests"]


def test_get_async_finds_an_object(client):
    oid = client.put({"a": [1, 2]})

    async def main():
        return (await client.get_async(oid), await client.get_async(oid, timeout=5),
                await client.put_ref(b"r" * 10).get_async())
    got, again, raw = asyncio.run(main())
    assert got == again == {"a": [1, 2]} and bytes(raw) == b"r" * 10


def test_get_async_without_timeout_does_not_wait(client):
    with pytest.raises(sealstore.ObjectNotFoundError):
        asyncio.run(client.get_async(b"n" * 20))
    with pytest.raises((TypeError, ValueError)):
        asyncio.run(client.get_async("not bytes", timeout=1))


def test_get_async_times_out(client):
    async def main():
        return await client.get_async(b"t" * 20, timeout=0.05)
    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert parked(client) == 0 and not client._aio


def test_wait_does_not_block_the_loop(client):
    # the object is put by a task of the same loop after it has run five
    # times: if the waiting get blocked the loop, it would never be put
    oid = b"L" * 20
    ticks = []

    async def ticker():
        while len(ticks) < 5:
            ticks.append(parked(client))
            await asyncio.sleep(0.01)
        return await client.put_async({"late": True}, id=oid)

    async def main():
        t = asyncio.create_task(ticker())
        got = await client.get_async(oid, timeout=60)
        return got, await t
    got, put_id = asyncio.run(main())
    assert got == {"late": True} and put_id == oid and len(ticks) == 5
    # nothing waited in the store meanwhile: the wait is a seal subscription
    assert ticks[1:] == [0] * 4


def test_cancel_stops_the_wait_at_once(client):
    oid = b"C" * 20

    async def main():
        task = asyncio.create_task(client.get_async(oid, timeout=math.inf))
        while not client._aio.get(asyncio.get_running_loop(), None) or \
                not client._aio[asyncio.get_running_loop()].waiting:
            await asyncio.sleep(0.001)
        task.cancel()
        for _ in range(3):  # the task's next step ends it: no wait in a thread
            await asyncio.sleep(0)
        done = task.done()
        with pytest.raises(asyncio.CancelledError):
            await task
        return done
    assert asyncio.run(main())
    assert parked(client) == 0 and not client._aio  # subscription closed too
    client.put(b"after cancel", id=oid)  # nobody took it
    assert client.get(oid) is not None


def test_many_waiters_woken_by_another_process(client, sock):
    ids = [bytes([i]) * 20 for i in range(1, 9)]

    async def main():
        tasks = [asyncio.create_task(client.get_async(i, timeout=60)) for i in ids]
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, lambda: sshelpers.run_py(
            "import sys, json, sealstore\n"
            "c = sealstore.connect(sys.argv[1])\n"
            "for i in sys.argv[2:]:\n"
            "    c.put(bytes.fromhex(i) * 2, id=bytes.fromhex(i))\n"
            "print(json.dumps(0))\n", sock, *[i.hex() for i in ids]))
        return await asyncio.gather(*tasks)
    got = asyncio.run(main())
    assert [bytes(g) for g in got] == [i * 2 for i in ids]


def test_close_wakes_waiters(client):
    async def main():
        task = asyncio.create_task(client.get_async(b"w" * 20, timeout=math.inf))
        while not client._aio:
            await asyncio.sleep(0.001)
        client.close()
        await task
    with pytest.raises(ValueError, match="closed"):
        asyncio.run(main())


def test_store_death_ends_the_wait(remote_store, sock):
    c = sealstore.connect(sock)

    async def main():
        task = asyncio.create_task(c.get_async(b"d" * 20, timeout=math.inf))
        while not c._aio:
            await asyncio.sleep(0.001)
        remote_store.kill()
        await task
    with pytest.raises(sealstore.StoreGoneError):
        asyncio.run(main())
    c.close()


def test_subscribe_finds_the_store_gone(remote_store, sock):
    # get_async re-subscribes after its subscription ends; when the store
    # died meanwhile, that connect is refused: the error must say the
    # store is gone, as the client's own calls do
    c = sealstore.connect(sock)
    remote_store.kill()
    remote_store.wait()
    with pytest.raises(sealstore.StoreGoneError) as e:
        c._subscribe()
    assert e.value.socket == sock
    assert c.gone
    c.close()


def test_put_async(client):
    async def main():
        oid = await client.put_async({"p": 1})
        ref = await client.put_async(b"raw", ref=True)
        return oid, ref
    oid, ref = asyncio.run(main())
    assert client.get(oid) == {"p": 1}
    assert isinstance(ref, sealstore.Ref) and bytes(ref.get()) == b"raw"


def test_cancelled_put_async_leaves_nothing(client):
    np = pytest.importorskip("numpy")
    before = client.stats()["objects"]
    oid = b"P" * 20

    async def main():
        task = asyncio.create_task(client.put_async({"a": np.ones(64 * MiB // 8)}, id=oid))
        await asyncio.sleep(0)  # the copy has been handed to the executor
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())  # waits for the executor: the copy ends, then the delete
    assert not client.contains(oid)
    assert client.stats()["objects"] == before
