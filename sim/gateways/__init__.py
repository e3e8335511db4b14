"""Mock APNs and FCM gateways: the stand-ins for Apple's and Google's push services."""
