"""Plain images without labels: every image file under the root, imported as unlabeled."""

from __future__ import annotations

from appliance.transfers.formats import ParsedSet, SourceItem, Tree


def parse(tree: Tree) -> ParsedSet:
    return ParsedSet("plain", items=[SourceItem(p, tree.rel(p)) for p in tree.images()])
