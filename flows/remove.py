"""remove: the selected object, dilated, painted over by LaMa in a window around it.

select -> dilate (REMOVE_DILATE_KERNEL_SIZE) -> LaMa region (utils.windows.plan_lama_region:
the whole photo, or a crop around the mask, at most MAX_IMAGE_SIZE) -> paint -> paste back.
"""

from __future__ import annotations

import asyncio

from api.schemas import InpaintResponse, RemoveRequest
from flows.context import FlowContext
from flows.painters import lama_painter
from flows.plan import kernel_size, paint_region, region_to_paint
from flows.responses import inpaint_response
from flows.selection import select
from flows.upload import Upload
from utils.windows import plan_lama_region


async def remove(ctx: FlowContext, request: RemoveRequest, upload: Upload) -> InpaintResponse:
    settings = ctx.settings
    selection = await select(ctx.sam, request, upload, ctx.sam3)
    kernel = kernel_size(request.dilate_kernel_size, settings.remove_dilate_kernel_size)
    region = await region_to_paint(selection.mask, kernel, keep_object=False)
    window = await asyncio.to_thread(
        plan_lama_region,
        upload.image.shape[:2],
        region,
        settings.max_image_size,
        settings.lama_crop_margin,
    )
    painted = await paint_region(upload.image, region, window, lama_painter(ctx))
    return await inpaint_response(
        ctx, request, upload, painted, selection, model="lama", kernel=kernel, strategy=window.kind
    )
