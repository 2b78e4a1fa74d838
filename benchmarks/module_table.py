"""Print the module table (name, paper, family, cost order) from the registry (the site generates it too: docs/modules/index.md)."""

import segattn
from segattn.registry import UPSAMPLERS


def main() -> None:
    print("| name | paper | family | order (MACs) |")
    print("|---|---|---|---|")
    for name in segattn.list_modules():
        info = segattn.module_info(name)
        print(f"| `{name}` | {info['paper']} | {info['family']} | {info['order']} |")
    for name in segattn.list_upsamplers():
        meta = UPSAMPLERS.meta(name)
        print(f"| `{name}` (upsampler) | {meta['paper']} | {meta['family']} | {meta['order']} |")


if __name__ == "__main__":
    main()
