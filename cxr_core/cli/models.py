"""placeholder while refactoring"""


def add_parser(sub) -> None:
    pass
