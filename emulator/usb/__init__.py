"""The USB link: virtual host controller and wire, pyusb backend, pcap, bridges."""
