"""The inventory service's messages, plus one command that lives in this slow package."""

from events.registry import Messages
from shop.messages.inventory import INVENTORY_COMMANDS, INVENTORY_EVENTS, AddStock


class Restock(AddStock):
    """AddStock under another name: unpickling it imports this package."""


MESSAGES = Messages(INVENTORY_EVENTS, (*INVENTORY_COMMANDS, Restock))
