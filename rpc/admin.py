"""The AdminService of proto/msaas/v1/separation.proto, behind an admin key: the dead letters and every tenant's
usage (REST: /apiv1/admin/...). Each call is `msaas.services.Admin`'s, on the blocking pool."""

from __future__ import annotations

import grpc

from msaas.services import Admin
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc.blocking import Blocking
from rpc.guards import Guard, guarded, tenant
from rpc.messages import dead_letter_message, usage_message

DEAD_PAGE = 50


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, access, guard: Guard, blocking: Blocking) -> None:
        self.admin = admin
        self.access = access
        self.guard = guard
        self.blocking = blocking

    async def _allowed(self) -> None:
        await self.blocking(self.access.require_admin, tenant())

    @guarded
    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
                              ) -> pb.ListDeadLettersResponse:
        await self._allowed()
        letters, cursor = await self.blocking(self.admin.dead_letters, request.cursor or None,
                                              request.limit or DEAD_PAGE)
        return pb.ListDeadLettersResponse(dead=[dead_letter_message(letter.as_json()) for letter in letters],
                                          next_cursor=cursor or "")

    @guarded
    async def GetDeadLetter(self, request: pb.DeadLetterRequest, context: grpc.aio.ServicerContext
                            ) -> pb.DeadLetter:
        await self._allowed()
        return dead_letter_message((await self.blocking(self.admin.dead_letter, request.id)).as_json())

    @guarded
    async def RetryDeadLetter(self, request: pb.DeadLetterRequest, context: grpc.aio.ServicerContext
                              ) -> pb.RetryDeadLetterResponse:
        await self._allowed()
        await self.blocking(self.admin.retry, request.id)
        return pb.RetryDeadLetterResponse(id=request.id, reason="Job queued again")

    @guarded
    async def PurgeDeadLetters(self, request: pb.DeadLetterRequest, context: grpc.aio.ServicerContext
                               ) -> pb.PurgeDeadLettersResponse:
        await self._allowed()
        return pb.PurgeDeadLettersResponse(purged=await self.blocking(self.admin.purge, request.id or None))

    @guarded
    async def ListUsage(self, request: pb.UsageRequest, context: grpc.aio.ServicerContext) -> pb.ListUsageResponse:
        await self._allowed()
        used = await self.blocking(self.admin.usage)
        return pb.ListUsageResponse(tenants={name: usage_message(name, values) for name, values in used.items()})
