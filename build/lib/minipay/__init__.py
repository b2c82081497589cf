"""The minipay API as Python sees it: the messages and stubs generated from
``protofiles/minipay/v1/*.proto`` (``minipay.v1``, made at install time and never committed)
and the currency table every side uses to turn display amounts into minor units
(``minipay.money``)."""
