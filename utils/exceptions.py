"""The errors a request can end in, each with one HTTP status and one error code.

Everything a client can cause is an `InpaintError` subclass; the service turns it into
`{"success": false, "request_id", "timestamp", "error": {"code", "message"}}`.
"""

from __future__ import annotations

from http import HTTPStatus


class InpaintError(Exception):
    """Base of every error that becomes a JSON error response."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImageException(InpaintError):
    """The upload is not an image we can decode (or not a supported format)."""

    status = HTTPStatus.BAD_REQUEST
    code = "invalid_image"


class MalformedRequestException(InpaintError):
    """The request body or its `request` part is not what the route takes."""

    status = HTTPStatus.BAD_REQUEST
    code = "malformed_request"


class FileTooLargeException(InpaintError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "file_too_large"


class ImageTooLargeException(InpaintError):
    """The image header declares more pixels than the decompression-bomb guard allows."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "image_too_large"


class UnsupportedMediaTypeException(InpaintError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class ValidationException(InpaintError):
    """A field is well-formed but not acceptable (point outside the image, empty prompt...)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"


class UnsupportedImageException(ValidationException):
    """A readable image whose samples cannot be brought to 8 bits without guessing."""

    code = "unsupported_image"


class EmptyMaskException(ValidationException):
    code = "empty_mask"


class NothingSelectedException(ValidationException):
    """A `text` selection found no instance above the threshold (or the clicks removed all)."""

    code = "nothing_selected"


class ModelNotLoadedException(InpaintError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "model_not_loaded"


class OverloadedException(InpaintError):
    """The models are loaded but their queues are full; retrying later can succeed."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "overloaded"


class UploadTimeoutException(InpaintError):
    """The body did not arrive within UPLOAD_READ_TIMEOUT_S (a slow or stalled sender)."""

    status = HTTPStatus.REQUEST_TIMEOUT
    code = "upload_timeout"


class ProcessingTimeoutException(InpaintError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "processing_timeout"


class NotFoundException(InpaintError):
    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class MethodNotAllowedException(InpaintError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    code = "method_not_allowed"


class UnauthorizedException(InpaintError):
    """API_KEYS is set and the request carries none of them."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"


class RateLimitedException(InpaintError):
    """The caller's token bucket holds fewer tokens than the route costs."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
