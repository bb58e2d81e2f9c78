"""RenderMix and GetWaveform (docs/mixes.md): the SeparationService's calls into `msaas.mixes.Mixes`, a mixin that
rpc/service.py's servicer inherits. Every blocking step runs on the blocking pool; a call waiting for another
call's render of the same mix sleeps on the loop between looks, holding no thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import grpc

from msaas.mixes import POLL_SECONDS, Mixes
from msaas.recipes import OUTPUT
from msaas.storage import Download
from msaas.v1 import separation_pb2 as pb
from rpc.blocking import Blocking
from rpc.guards import guarded, tenant
from rpc.messages import option_values


class MixMethods:
    mixes: Mixes
    blocking: Blocking

    @guarded
    async def RenderMix(self, request: pb.MixRequest, context: grpc.aio.ServicerContext) -> None:
        mixes = self.mixes
        plan = await self.blocking(mixes.plan, tenant(), request.songhash, option_values(request.options),
                                   recipe_values(request.recipe))
        waited = False
        while (rendered := await self.blocking(mixes.attempt, plan, waited)) is None:
            waited = True
            while await self.blocking(mixes.rendering_elsewhere, plan):
                await asyncio.sleep(POLL_SECONDS)
        info = pb.MixInfo(**rendered.describe())
        if request.link:
            info.url = await self.blocking(mixes.link, rendered)
            await context.write(pb.RenderMixResponse(info=info))
            return
        await _stream(context, self.blocking, await self.blocking(mixes.open, rendered), info)

    @guarded
    async def GetWaveform(self, request: pb.TrackRequest, context: grpc.aio.ServicerContext) -> pb.Waveform:
        data = await self.blocking(self.mixes.waveform, tenant(), request.songhash, request.track,
                                   option_values(request.options))
        return pb.Waveform(**json.loads(data))


def recipe_values(recipe: pb.MixRecipe) -> dict[str, object]:
    """The recipe as REST's JSON body would give it (`msaas.recipes.Recipe.parse` judges both alike)."""
    values: dict[str, object] = {"gains": dict(recipe.gains), "mute": list(recipe.mute), "preset": recipe.preset}
    values.update({name: getattr(recipe, name) for name in OUTPUT if recipe.HasField(name)})
    return values


async def _stream(context: grpc.aio.ServicerContext, blocking: Blocking, download: Download, info: pb.MixInfo
                  ) -> None:
    """`info`, then the mix's bytes as they are read from the store (each read off the loop, each write waiting
    for the client); the store's response closed at the end, however the call ends."""
    chunks: Iterator[bytes] = iter(download)
    try:
        await context.write(pb.RenderMixResponse(info=info))
        while (chunk := await blocking(next, chunks, None)) is not None:
            await context.write(pb.RenderMixResponse(chunk=chunk))
    finally:
        try:
            chunks.close()  # type: ignore[attr-defined]
        except ValueError:  # still reading in another thread (the call was cancelled mid-read): cut the read short
            download.response.close()

