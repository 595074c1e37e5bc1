#!/bin/sh
# What an operator writes without iris-credexec: no checks, no cache, no failure JSON.
# Usage (as a credential config command): /bin/sh naive-helper.sh HOST:PORT
tok=$(curl -sfG -H 'Metadata-Flavor: Google' \
  --data-urlencode "audience=$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE" --data-urlencode format=full \
  "http://$1/computeMetadata/v1/instance/service-accounts/default/identity")
printf '{"version":1,"success":true,"token_type":"%s","id_token":"%s","expiration_time":%d}\n' \
  "$GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE" "$tok" $(( $(date +%s) + 3000 ))
