"""Async governed functions, and identity isolation between asyncio tasks and threads (contextvars)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import unittest
import uuid

import onbehalf
from onbehalf import Client, Denied, governed

from support import URL, TempDir, audit_until, needs_server, token


@needs_server
class AsyncTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

    def tearDown(self) -> None:
        self.tmp.cleanup()

    async def test_async_governed_allowed_redacted_and_denied(self) -> None:
        c = self.client

        @governed(c)
        async def get_customer(customer_id: str) -> dict:
            await asyncio.sleep(0)
            return {"id": customer_id, "ssn": "078-05-1120"}

        @governed(c)
        async def delete_account(account: str) -> str:
            raise AssertionError("must not run")

        self.assertTrue(asyncio.iscoroutinefunction(get_customer))
        async with c.acting_as(token("alice"), agent="async-bot"):
            self.assertEqual(await get_customer("c-1"), {"id": "c-1", "ssn": "[REDACTED]"})
            with self.assertRaises(Denied) as caught:
                await delete_account("a-1")
        self.assertEqual(caught.exception.reason_code, "permission_deny")
        with self.assertRaises(Denied) as unbound:
            await get_customer("c-1")
        self.assertEqual(unbound.exception.reason_code, "no_identity")

    async def test_two_concurrent_tasks_act_for_two_different_users(self) -> None:
        c = self.client
        run = uuid.uuid4().hex[:10]

        @governed(c)
        async def lookup_order(order_id: str, step: int) -> str:
            await asyncio.sleep(0.01)  # let the other task run in between
            return onbehalf.current().agent

        async def work(user: str) -> list[str]:
            seen = []
            async with c.acting_as(token(user), agent=f"bot-of-{user}"):
                for step in range(6):
                    seen.append(await lookup_order(f"{run}-{user}", step))
                    await asyncio.sleep(0)
            return seen

        alice, bob = await asyncio.gather(work("alice"), work("bob"))
        self.assertEqual(alice, ["bot-of-alice"] * 6)
        self.assertEqual(bob, ["bot-of-bob"] * 6)
        for user, other in (("alice", "bob"), ("bob", "alice")):
            def mine(rs: list[dict]) -> list[dict]:
                return [r for r in rs if str((r.get("args") or {}).get("order_id", "")).startswith(run)]

            records = mine(audit_until(lambda rs: len(mine(rs)) >= 12, user=user, tool="lookup_order"))
            self.assertEqual(len([r for r in records if r["kind"] == "attempt"]), 6)
            self.assertTrue(all(r["args"]["order_id"] == f"{run}-{user}" and r["agent"] == f"bot-of-{user}" for r in records))
            self.assertFalse(any(other in r["agent"] for r in records))

    async def test_tasks_created_inside_the_binding_inherit_it_and_others_do_not(self) -> None:
        c = self.client

        @governed(c)
        async def lookup_order(order_id: str) -> str:
            return onbehalf.current().agent

        started_outside = asyncio.get_running_loop().create_future()

        async def outside_worker() -> None:  # like a runtime started before the binding
            await started_outside
            await lookup_order("o-1")

        worker = asyncio.create_task(outside_worker())
        async with c.acting_as(token("alice"), agent="inner-bot"):
            inner = asyncio.create_task(lookup_order("o-2"))
            self.assertEqual(await inner, "inner-bot")
            started_outside.set_result(None)
            with self.assertRaises(Denied) as caught:
                await worker
        self.assertEqual(caught.exception.reason_code, "no_identity")

    async def test_async_delegate(self) -> None:
        c = self.client
        async with c.acting_as(token("alice"), agent="planner"):
            async with c.delegate("writer", scopes=["email.read"]) as frame:
                self.assertEqual(onbehalf.current().chain, ("planner", "writer"))
                self.assertIs(onbehalf.current(), frame)
            self.assertEqual(onbehalf.current().chain, ("planner",))


@needs_server
class ThreadTests(unittest.TestCase):
    def test_each_thread_has_its_own_binding_and_copy_context_carries_it(self) -> None:
        seen: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def a() -> None:
            onbehalf.set_context(token("alice"), agent="thread-a")
            barrier.wait()
            seen["a"] = onbehalf.current().agent
            ctx = contextvars.copy_context()
            t = threading.Thread(target=lambda: ctx.run(lambda: seen.__setitem__("a-child", onbehalf.current().agent)))
            t.start()
            t.join()
            t2 = threading.Thread(target=lambda: seen.__setitem__("a-plain-child", onbehalf.current()))
            t2.start()
            t2.join()

        def b() -> None:
            barrier.wait()
            seen["b"] = onbehalf.current()

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(seen, {"a": "thread-a", "b": None, "a-child": "thread-a", "a-plain-child": None})
        onbehalf.clear_context()


if __name__ == "__main__":
    unittest.main()
