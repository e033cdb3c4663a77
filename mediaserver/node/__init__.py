"""The node layer: several SFU processes (workers of one machine, or machines)
serving one site. A pair's media always lives on one node; signalling between
nodes goes over a message bus (Redis pub/sub, or the coordinator of one
machine's workers). With one node everything stays in-process (LocalBus).
"""

from mediaserver.node.bus import Bus, LocalBus, NodeInfo, home_node, peer_id

__all__ = ["Bus", "LocalBus", "NodeInfo", "home_node", "peer_id"]
