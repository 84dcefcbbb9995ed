"""The one exception every reader raises for input the engine will not analyse."""


class RefusedInput(Exception):
    """An input that is not an analysable chest radiograph.

    ``str(error)`` is a one-line reason fit for a terminal, a log or a DICOM status
    comment; it never contains patient names or IDs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(reason.split()))

    @property
    def reason(self) -> str:
        return str(self)
